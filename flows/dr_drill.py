"""DR restore drill: select → fetch + deep verify → start scratch → restore → checks → report →
teardown, each stage a timed task; RTO and RPO against the runbook's objectives. A drill that
did not pass fails its flow run (so failure notifications fire)."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from bvh_ops.config import load_settings
from bvh_ops.drill import engine
from bvh_ops.drill.objectives import (
    Objectives,
    drill_rto_rpo,
    objective_checks,
    physical_rpo,
    physical_stage_split,
    ready_time,
    rpo_seconds,
    trend_line,
)
from bvh_ops.errors import BvhOpsError, CryptoError, IntegrityError, NotFound, ToolError
from bvh_ops.results import CheckResult, CheckStatus
from flows.artifacts import drill_markdown
from tasks import drill_tasks as t
from tasks.common import retrying
from tasks.orphans import reap_orphaned_runs


class DrillFailed(IntegrityError):
    """The drill ran and did not pass; ``report`` holds the full result."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _run_name() -> str:
    p = flow_run.parameters or {}
    src = " from replica" if p.get("source") == "replica" else ""
    return f"dr-drill {p.get('backup', 'latest')} {p.get('mode', 'logical')}{src}"


@flow(name="dr-drill", flow_run_name=_run_name, retries=0)
def dr_drill(
    backup: str = "latest",
    to_time: datetime | None = None,
    mode: Literal["logical", "physical", "both"] = "logical",
    scratch: Literal["embedded", "configured"] = "embedded",
    to_lsn: str | None = None,
    source: Literal["primary", "replica"] = "primary",
    failover: bool | None = None,
) -> dict[str, Any]:
    """Restore a backup into a scratch server, check it and measure RTO/RPO.

    Args:
        backup: backup id, or "latest" (the newest taken before to_time when that is given).
        to_time: recovery target / simulated disaster time (UTC); default: the backup's snapshot.
        mode: logical (pg_dump backups), physical (base backups + WAL, recovered to the target) or both.
        scratch: "embedded" (a throw-away embedded PostgreSQL) or "configured" (drill_scratch_dsn);
            physical drills always restore into a throw-away data directory.
        to_lsn: physical mode: recover to this LSN instead of a time (default: the end of the archive).
        source: "primary", or "replica" to drill from the replica repository alone (replica_repository).
        failover: also run the failover drill (a standby from the replica repository, promoted and
            checked); default: as failover_drill_in_weekly says.
    """
    settings = load_settings()
    if source == "replica":
        settings = settings.for_replica()
    logger = get_run_logger()
    reap_orphaned_runs()  # before the clock starts: bookkeeping is not part of the RTO
    started = engine.utcnow()
    from checks.gx import warm_up

    warm_up()  # the GX import overlaps fetch and restore instead of delaying the checks
    drill_id = engine.new_drill_id(started)
    objectives = Objectives(settings.rto_objective_seconds, settings.rpo_objective_seconds)
    stages: list[dict[str, Any]] = []
    checks: list[CheckResult] = []
    manifest = None
    sc: engine.Scratch | None = None
    newest: datetime | None = None
    target = to_time

    @contextmanager
    def stage(name: str):
        t0, began = time.monotonic(), time.time()
        try:
            yield
        finally:  # started_at: where the stage lies on a timeline (bench/bench_dr_drill.py's CPU per stage)
            stages.append({"name": name, "seconds": round(time.monotonic() - t0, 3),
                           "started_at": datetime.fromtimestamp(began, UTC).isoformat()})

    def abort(name: str, exc: BaseException) -> None:
        # What the data or the backup did (a check, a tampered or unrestorable dump, a part of
        # it missing: a chain's base, a WAL segment) fails the stage; what kept the drill from
        # running (a setting, a scratch server that does not answer, the repository out of
        # reach) leaves it not verified: alerting hears "could not prove recoverability", not
        # "data corruption detected". A part missing from a backup chosen (NotFound after its
        # select: a chain's base) fails; NotFound *in* a select — no backup yet, an id mistyped, no
        # physical backup for mode=both — is the drill unable to run: not verified.
        selecting = name in ("select", "physical_select")
        data = isinstance(exc, IntegrityError | CryptoError | ToolError) or (isinstance(exc, NotFound) and not selecting)
        checks.append(CheckResult(name, CheckStatus.FAILED if data else CheckStatus.NOT_VERIFIED, str(exc)))
        logger.error("drill stage %s failed: %s", name, exc)

    psc = None
    proot = None  # the physical restore's scratch directory (the verify extracts the bases into it)
    physical_id = None
    rpos: list[float] = []
    logical_ready = physical_ready = None

    # Only where the restore runs pg_restore --jobs from a local copy (restore_jobs > 1): a single
    # job streams the dump, and a kept copy would be a whole plaintext written for nothing.
    copy_dir = (str(engine.scratch_root(settings, drill_id))
                if scratch == "embedded" and settings.restore_jobs > 1 else None)

    def logical_part() -> datetime | None:
        """select → fetch + deep verify → start scratch → pg_restore → checks."""
        nonlocal manifest, sc, newest, target
        side = None
        try:
            with stage("select"):
                manifest = retrying(t.select, settings)(settings, backup, to_time)
            target = to_time or datetime.fromisoformat(manifest.started_at)
            # The append-only tables' restored PITR side, summed from the dump as it is verified.
            plan = t.dump_pitr(settings, manifest, target, copy_dir)
            side = t.source_side(settings, target, manifest.server_version_num, plan)  # the live source's PITR side, read from now on
            with stage("fetch_verify"):  # an embedded scratch keeps the dump it decrypts for the restore
                verified = retrying(t.fetch_and_verify, settings)(settings, manifest.backup_id, copy_dir,
                                                                  manifest.bytes_in, plan)
            checks.append(verified)
            if not verified.passed:
                return None  # never restore what did not verify
            with stage("start"):
                sc = t.start_scratch(settings, drill_id, manifest.server_version_num // 10000, scratch,
                                     manifest.extra.get("dump_encoding"))
            summed = t.dump_sums(plan, side)
            if plan is not None and (left := [i for i in settings.append_only_tables if i not in summed]):
                logger.info("PITR side read on the restored copy, not summed from the dump: %s", "; ".join(
                    f"{i} ({plan.skipped.get(i, 'the live source was not read, or hashes rows otherwise')})" for i in left))
            with stage("restore"):  # each table's checks start as soon as it is loaded
                early = t.restore(settings, manifest, sc, target, side, summed)
            with stage("checks"):
                results, newest = t.run_checks(settings, manifest, sc, target, early, side, summed)
            checks.extend(results)
            if target and newest is not None:
                rpos.append(rpo_seconds(target, newest))
            return engine.utcnow()
        except BvhOpsError as exc:
            abort(stages[-1]["name"] if stages else "select", exc)
            return None
        finally:  # not verified, not restored, or done: no more scans of the live source
            if side is not None:
                side.stop()

    def physical_part() -> datetime | None:
        """select the base for the target → deep verify the chain and WAL → restore, verify,
        recover, promote → pg_amcheck, PITR, invariants, freshness."""
        nonlocal psc, proot, physical_id
        pstage = "physical_select"
        try:
            from bvh_ops.drill.physical import recovery_target, scratch_root

            proot = scratch_root(settings, drill_id)
            ptarget = recovery_target(to_time, to_lsn)
            with stage("physical_select"):
                pm = retrying(t.physical_select, settings)(settings, backup if mode == "physical" else "latest", ptarget)
            physical_id = pm.backup_id
            pstage = "physical_fetch_verify"
            with stage("physical_fetch_verify"):  # each base extracted into the scratch as it is verified
                pre = retrying(t.physical_verify, settings)(settings, pm, ptarget, str(proot))
            checks.extend(pre)
            if not all(c.passed for c in pre):
                return None  # never recover what did not verify (the extracted bases go below)
            pstage = "physical_recovery"
            t0 = time.monotonic()
            psc, rep = t.physical_restore(settings, drill_id, pm, ptarget)
            stages.extend(physical_stage_split(rep["seconds"], time.monotonic() - t0))
            checks.append(CheckResult("pg_verifybackup", CheckStatus.PASSED if rep["verified"] else
                                      CheckStatus.NOT_VERIFIED, rep["verified"] or "not run"))
            checks.append(CheckResult("physical_recovery", CheckStatus.PASSED,
                                      f"chain {' + '.join(rep['chain'])} recovered to {rep['target']} and "
                                      f"promoted: {rep['recovered_to']}"))
            pstage = "physical_checks"
            with stage("physical_checks"):
                results, pnewest, source_newest = t.physical_checks(settings, psc, ptarget_time(ptarget), started)
            checks.extend(results)
            rpo = physical_rpo(ptarget.kind, ptarget_time(ptarget), pnewest, source_newest, started)
            if rpo is not None:
                rpos.append(rpo)
            return engine.utcnow()
        except BvhOpsError as exc:
            abort(pstage, exc)
            return None

    try:
        if mode in ("logical", "both"):
            logical_ready = logical_part()
        if mode in ("physical", "both"):
            physical_ready = physical_part()
        rto, rpo = drill_rto_rpo(started, ready_time(mode, logical_ready, physical_ready),
                                 all(c.passed for c in checks), rpos)
        checks.extend(objective_checks(rto, rpo, objectives))
        passed = bool(checks) and all(c.passed for c in checks)
        report: dict[str, Any] = {
            "drill_id": drill_id, "passed": passed, "mode": mode, "source": source,
            "backup_id": manifest.backup_id if manifest else physical_id,
            "physical_backup_id": physical_id,
            "started_at": started.isoformat(), "target": target.isoformat() if target else None,
            "rto_seconds": round(rto, 3) if rto is not None else None,
            "rpo_seconds": round(rpo, 3) if rpo is not None else None,
            "objectives": {"rto_seconds": objectives.rto_seconds, "rpo_seconds": objectives.rpo_seconds},
            "scratch": "; ".join(x.label() for x in (sc, psc) if x) or None,
            "stages": stages, "checks": [c.to_json() for c in checks],
        }
        with stage("report"):
            report["finished_at"] = engine.utcnow().isoformat()
            try:
                previous = retrying(t.record, settings)(settings, report)
            except BvhOpsError as exc:
                previous = []
                abort("report", exc)
                report["checks"] = [c.to_json() for c in checks]
                report["passed"] = passed = False
            report["trend"] = trend_line([(p["rto_seconds"], p["rpo_seconds"]) for p in previous])
            report["previous"] = previous
            create_markdown_artifact(key="dr-drill-report", markdown=drill_markdown(report),
                                     description=f"DR drill {drill_id} of {report['backup_id']}")
            create_table_artifact(key="dr-drill-checks", table=report["checks"],
                                  description=f"Checks of DR drill {drill_id}")
    finally:
        if sc is not None:
            with stage("teardown"):
                retrying(t.teardown, settings)(sc)
        elif copy_dir is not None:
            shutil.rmtree(copy_dir, ignore_errors=True)  # no scratch started: the kept dump goes
        if psc is not None:
            with stage("physical_teardown"):
                retrying(t.physical_teardown, settings)(psc)
        elif proot is not None:
            shutil.rmtree(proot, ignore_errors=True)  # no restored copy: the bases the verify extracted go
    report["stages"] = stages
    if settings.failover_drill_in_weekly if failover is None else failover:
        report["failover_drill"] = failover_part(settings)
        if not report["failover_drill"]["passed"]:
            passed = False
            checks.append(CheckResult("failover_drill", CheckStatus.FAILED, report["failover_drill"]["summary"]))
    if not passed:
        bad = [c for c in checks if not c.passed]
        raise DrillFailed(f"DR drill {drill_id} failed: " + ", ".join(f"{c.name} {c.status}" for c in bad), report)
    logger.info("DR drill %s passed: RTO %.1f s, RPO %s s", drill_id, report["rto_seconds"], report["rpo_seconds"])
    return report


def failover_part(settings: Any) -> dict[str, Any]:
    """The failover drill as part of the weekly drill (its own flow run, record and artifact):
    from the replica repository when one is configured."""
    from flows.failover_drill import failover_drill

    try:
        r = failover_drill(source="replica" if settings.replica_repository else "primary")
    except DrillFailed as exc:
        r = exc.report
    bad = [c["name"] for c in r["checks"] if c["status"] != "passed"]
    return {"drill_id": r["drill_id"], "passed": r["passed"], "rto_seconds": r["rto_seconds"],
            "rpo_seconds": r["rpo_seconds"],
            "summary": f"failover drill {r['drill_id']}: RTO {r['rto_seconds']} s, RPO {r['rpo_seconds']} s"
                       + (f"; not passed: {', '.join(bad)}" if bad else "")}


def ptarget_time(target: Any) -> datetime | None:
    """The recovery target as a time (time targets only)."""
    if getattr(target, "kind", None) == "time":
        return datetime.fromisoformat(target.value)
    return None


if __name__ == "__main__":
    dr_drill()
