"""Tasks of the DR drill: each stage one task, each with its own timeout."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bvh_ops.alerting.findings import Finding, report_findings
from bvh_ops.alerting.rules import Severity
from bvh_ops.audit.record import record as audit_record
from bvh_ops.config import Settings
from bvh_ops.drill import committime, dumpside, engine, ops
from bvh_ops.drill.dumpside import DumpPitr
from bvh_ops.logical.restore import restore_logical
from bvh_ops.pg.conn import connect
from bvh_ops.progress import LogEvery, listening
from bvh_ops.repository.manifest import Manifest
from bvh_ops.results import CheckResult, CheckStatus
from checks import drill_suite
from checks.drill_early import EarlyChecks, SourceSide
from tasks.common import retry_transient_only

_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_condition_fn": retry_transient_only}


@task(name="drill-select", timeout_seconds=300, **_opts)
def select(settings: Settings, backup: str, to_time: datetime | None) -> Manifest:
    """The backup to drill: the given id, or the newest one (taken before to_time, if given)."""
    return engine.select_backup(settings, backup, to_time)


@task(name="drill-fetch-verify", timeout_seconds=6 * 3600, **_opts)
def fetch_and_verify(settings: Settings, backup_id: str, copy_dir: str | None = None,
                     dump_size: int = 0, pitr: DumpPitr | None = None) -> CheckResult:
    """Deep verify of the backup. ``copy_dir`` (an embedded scratch's directory): the dump, as
    it is decrypted and checked, is also kept there for the restore (one decryption, not two);
    ``pitr`` (dump_pitr below): meanwhile the append-only tables' restored PITR side is summed
    from its rows."""
    keep = None
    if pitr is not None:
        pitr.reset()  # a retry walks the dump again
    if copy_dir is not None:
        from bvh_ops.logical.backup import DUMP_OBJECT
        from bvh_ops.logical.restore import PreparedCopy, copy_path
        from bvh_ops.maintenance.disk import write_owner

        try:
            write_owner(Path(copy_dir))  # weekly disk cleanup removes it once this process is gone
            keep = {DUMP_OBJECT: PreparedCopy(copy_path(Path(copy_dir), backup_id), dump_size, pitr)}
        except OSError as exc:  # no copy: the restore decrypts the dump itself
            get_run_logger().info("the verified dump is not kept for the restore (%s): it decrypts it again", exc)
    try:
        with listening(LogEvery(get_run_logger().info)):
            results = engine.deep_verify(settings, backup_id, keep)
    except BaseException:
        for sink in (keep or {}).values():
            sink.abort()
        raise
    bad = [r for r in results if not r.ok]
    if bad:
        return CheckResult("deep_verify", CheckStatus.FAILED,
                           "; ".join(f"{r.object}: {r.status} ({r.detail})" for r in bad))
    kept = ""
    for sink in (keep or {}).values():
        if sink.dropped:
            get_run_logger().info("the verified dump is not kept for the restore (%s): it decrypts it again",
                                  sink.dropped)
        else:
            kept = "; the verified dump kept for the restore"
    return CheckResult("deep_verify", CheckStatus.PASSED,
                       f"{len(results)} objects decrypted and hashed: all OK{kept}")


@task(name="drill-start-scratch", timeout_seconds=600, **_opts)
def start_scratch(settings: Settings, drill_id: str, server_major: int, scratch: str,
                  encoding: str | None = None) -> engine.Scratch:
    return engine.provision_scratch(settings, drill_id, server_major, scratch, encoding)


# Its result (the early reads: threads, a pool, connections) is handed to drill-checks in this
# process and cannot be serialised: never persisted, whatever PREFECT_RESULTS_PERSIST_BY_DEFAULT says.
@task(name="drill-restore", timeout_seconds=6 * 3600, persist_result=False, **_opts)
def restore(settings: Settings, manifest: Manifest, scratch: engine.Scratch,
            target: datetime, source_side: SourceSide | None = None,
            dump_pitr: dict | None = None) -> EarlyChecks | None:
    """pg_restore into the scratch; where ``drill_early_checks`` allows, meanwhile each table is
    read for its checks as soon as it is loaded (checks.drill_early). ``source_side``: the live
    source's side of the PITR comparison, already under way (source_side() below; else the
    early reads begin it); ``dump_pitr``: the append-only tables whose restored side was summed
    from the dump (not read again). Returns those reads for ``run_checks`` (None: all after)."""
    early = None
    append_only = [item for item in settings.append_only_tables if item not in (dump_pitr or {})]
    reads = settings.early_drill_reads()
    if reads == "pitr" and not append_only:
        reads = None  # every table's PITR side is in hand: nothing to read while the restore runs
    if reads is not None:
        early = EarlyChecks(scratch.dsn(), manifest, source=_source(settings), copies=reads == "all",
                            append_only=append_only,
                            cutoff=target - timedelta(seconds=settings.pitr_margin_seconds), source_side=source_side,
                            server=scratch.local_server())
    try:
        with listening(LogEvery(get_run_logger().info)):
            if early is not None:
                early.begin()
            # An embedded scratch has a directory of its own: pg_restore -j on a decrypted copy there.
            restore_logical(settings, manifest.backup_id, scratch.dsn(), no_owner=True, compare=False,
                            jobs=settings.restore_jobs,
                            copy_dir=Path(scratch.root) if scratch.kind == "embedded" else None,
                            on_table_loaded=early.loaded if early is not None else None)
        if early is not None:
            early.restored()
        if not engine.accepts_connections(scratch.dsn()):
            from bvh_ops.errors import DatabaseUnavailable

            raise DatabaseUnavailable("the restored database does not accept connections")
    except BaseException:
        if early is not None:
            early.close()
        raise
    return early


def _source(settings: Settings) -> str | None:
    return settings.database_url.get_secret_value() if settings.database_url else None


def source_side(settings: Settings, target: datetime, restored_version: int | None = None,
                pitr: DumpPitr | None = None) -> SourceSide:
    """Begin reading the live source's side of the PITR comparison (a thread of its own): it
    needs nothing restored, so the drill starts it once it knows its target and it overlaps the
    fetch, the verify and the restore instead of lengthening the checks (issue #19, goal 3). A
    plain call, not a task: it returns at once, and the checks report whatever it could not read.
    ``pitr``: the restored side will be summed from the dump, so the source hashes each row's
    text as the dump has it (the text method)."""
    return SourceSide(_source(settings), settings.append_only_tables,
                      target - timedelta(seconds=settings.pitr_margin_seconds), restored_version,
                      method=drill_suite.PITR_TEXT if pitr is not None else None,
                      method_items=pitr.candidates() if pitr is not None else None).start()


def dump_pitr(settings: Settings, manifest: Manifest, target: datetime, copy_dir: str | None) -> DumpPitr | None:
    """The plan to sum the append-only tables' restored PITR side from the dump as the deep
    verify decrypts it (bvh_ops.drill.dumpside), where it can be: the verify keeps the dump for
    the restore (``copy_dir``), this install has the C walk, the dump is in UTF-8 and there is a
    live source to compare with. None: the checks read the restored copy after the restore."""
    if (copy_dir is None or not dumpside.available() or not settings.append_only_tables
            or settings.database_url is None or int(manifest.extra.get("fingerprints") or 1) < 2
            or str(manifest.extra.get("dump_encoding") or "").upper() not in ("UTF8", "UTF-8")):
        return None  # (fingerprints 2+: pg_dump ran with TimeZone, bytea_output and lc_monetary fixed)
    return DumpPitr(settings.append_only_tables, target - timedelta(seconds=settings.pitr_margin_seconds),
                    manifest.extra.get("schema"))


def dump_sums(plan: DumpPitr | None, side: SourceSide | None) -> dict[str, tuple[int, str]]:
    """The restored PITR sides ``plan`` summed from the verified dump that the live source's
    side can be compared with: only where the source hashes rows as the dump's sums do (the text
    method, chosen once the source's encoding and platform were read: SourceSide)."""
    if plan is None or side is None:
        return {}
    side.time_zone()  # waits until the source's version, encoding and method are known
    if not side.dump_comparable:
        return {}
    # Only entries the source hashes as the dump's sums are (the plan's candidates: a superset).
    return {item: v for item, v in plan.results().items() if side.method_for(item) == drill_suite.PITR_TEXT}


@task(name="drill-checks", timeout_seconds=6 * 3600, **_opts)
def run_checks(settings: Settings, manifest: Manifest, scratch: engine.Scratch, target: datetime,
               early: EarlyChecks | None = None, source_side: SourceSide | None = None,
               dump_pitr: dict | None = None) -> tuple[list[CheckResult], datetime | None]:
    """Every check of the restored copy. What ``early`` read during the restore counts where the
    table provably has not changed since (the rest is read now); the live source's PITR bounds
    ``source_side`` (or ``early``) read meanwhile count as they are; ``dump_pitr``: restored PITR
    sides summed from the verified dump (dump_pitr), which count while logical_fingerprints
    proves the restored tables hold the dump's rows (else they are read). The heavy scans (fingerprints,
    PITR, invariants) run on two worker threads while GX, schema and freshness run here; results
    keep a fixed order. The invariants (which use nothing read early) and GX's import start while
    a read still under way when the restore ended finishes, so that one read does not hold up
    both cores."""
    from concurrent.futures import ThreadPoolExecutor

    dsn = scratch.dsn()
    secrets = [p for p in (_password(dsn), _password(settings.database_url)) if p]
    source = _source(settings)
    cutoff = target - timedelta(seconds=settings.pitr_margin_seconds)
    newest: list[datetime | None] = [None]

    def freshness() -> CheckResult:
        newest[0] = committime.newest_commit(dsn, settings.append_only_tables, zone())
        return drill_suite.check_freshness(newest[0], target)

    comparisons: list = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bvh-check") as pool:
        invariants = pool.submit(drill_suite.guarded, "invariants",
                                 lambda: drill_suite.check_invariants(dsn, settings.invariants,
                                                                     parallel_workers=drill_suite.parallel_checks()),
                                 secrets)
        settling = pool.submit(early.settle) if early is not None else None
        try:  # import Great Expectations (~4 s) while the scans run
            from checks.gx import context

            context()
        except Exception:  # noqa: BLE001 - the GX check reports not_verified by itself
            pass
        settled = settling.result() if settling is not None else None
        if settled is not None and settled.reread:
            get_run_logger().info("changed since read during the restore, read again: %s", ", ".join(settled.reread))
        side = source_side if settled is None else None  # (the early reads waited for it: settled has it)

        from_dump: dict = {}

        def pitr_known() -> dict:  # on the PITR check's thread: waiting for the source side holds up nothing else
            if settled:
                known = {"restored_known": settled.restored_pitr, "source_known": settled.source_pitr}
            else:
                known = {"source_known": side.result()} if side is not None else {}
            # The dump's sums are of each row's text: only against a source that hashed the same
            # (the text method, in UTF-8 as the dump is).
            if dump_pitr and source_side is not None:
                source_side.result()
                if source_side.dump_comparable:
                    from_dump.update(dump_pitr)
                    known["restored_known"] = {**dump_pitr, **(known.get("restored_known") or {})}
            return known

        def side_zone() -> str | None:  # the zone only: freshness (on this thread) needs no bound
            return side.time_zone() if side is not None else None

        # Asked inside the checks: a failure is theirs (not_verified), not the task's.
        zone = _once(lambda: (settled and settled.zone) or side_zone() or committime.source_time_zone(source, dsn))
        known = settled.copies if settled else None
        fingerprints = pool.submit(drill_suite.guarded, "logical_fingerprints",
                                   lambda: drill_suite.check_fingerprints(dsn, manifest, comparisons, known=known,
                                                                          server=scratch.local_server()),
                                   secrets)
        pitr = pool.submit(drill_suite.guarded, "pitr_append_only",
                           lambda: drill_suite.check_pitr(dsn, source, settings.append_only_tables, cutoff, zone(),
                                                          **pitr_known(), from_dump=from_dump), secrets)
        schema = drill_suite.guarded("schema", lambda: drill_suite.check_schema(dsn, manifest), secrets)
        fresh = drill_suite.guarded("freshness", freshness, secrets)
        fp = fingerprints.result()
        gx = drill_suite.guarded("row_counts_gx", lambda: drill_suite.check_row_counts_gx(comparisons), secrets)
        pitr_results = pitr.result()
        if from_dump and not all(r.status is CheckStatus.PASSED for r in fp):
            # The restored tables were not proven to hold the dump's rows: their side read from them.
            get_run_logger().info("logical_fingerprints did not pass: the PITR comparison reads the restored copy")
            source_known = {k: v for k, v in ((settled.source_pitr if settled else None)
                                               or (source_side.result() if source_side else {})).items()}
            restored_known = {k: v for k, v in ((settled.restored_pitr if settled else None) or {}).items()
                              if k not in from_dump}
            pitr_results = drill_suite.guarded(
                "pitr_append_only", lambda: drill_suite.check_pitr(dsn, source, settings.append_only_tables, cutoff,
                                                                   zone(), restored_known=restored_known,
                                                                   source_known=source_known), secrets)
        results = fp + gx + schema + pitr_results + invariants.result() + fresh
    return results, newest[0]


def _once(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn()`` computed once for every thread that asks (functools.cache computes it in each of
    the threads that ask together: the PITR check and freshness could each ask the source for
    its time zone, and one get the restored copy's where the source failed it once). A failure
    is raised to each caller and asked again by the next."""
    lock, done = threading.Lock(), []

    def once() -> Any:
        with lock:
            if not done:
                done.append(fn())
            return done[0]

    return once


def _password(dsn: Any) -> str | None:
    if dsn is None:
        return None
    from psycopg.conninfo import conninfo_to_dict

    raw = dsn.get_secret_value() if hasattr(dsn, "get_secret_value") else dsn
    return conninfo_to_dict(raw).get("password")


@task(name="drill-report", timeout_seconds=300, **_opts)
def record(settings: Settings, report: dict[str, Any], source: str = "drill") -> list[dict[str, Any]]:
    """Store the drill in the ops database; returns the earlier drills for the trend. Its
    findings go to alerting as ``source`` (the failover drill's own: "failover-drill")."""
    with ops.ops_database(settings) as dsn:
        previous = ops.previous_drills(dsn)
        ops.record_drill(dsn, report)
        with connect(dsn, autocommit=True) as conn:
            report_findings(conn, source, drill_findings(report), datetime.now(UTC))
            audit_record(settings, None, "drill.result", report["drill_id"], {
                k: report[k] for k in ("backup_id", "mode", "passed", "rto_seconds", "rpo_seconds")}, conn=conn)
    return previous


def drill_findings(report: dict[str, Any]) -> list[Finding]:
    """What a drill tells alerting: a failed restore or data check is the runbook's critical
    "data corruption detected"; a check or stage that could not run (a scratch server that does
    not answer, a setting missing, a source not reachable) is a warning that recoverability was
    not proven — never corruption, never silence; a missed RTO/RPO objective is a warning. A
    passing drill reports none, which clears the last drill's findings."""
    failed = [c for c in report["checks"] if c["status"] == "failed"]
    data = [c for c in failed if not c["name"].endswith("_objective")]
    missed = [c for c in failed if c["name"].endswith("_objective")]
    unproven = [c for c in report["checks"] if c["status"] == "not_verified"]
    out = []
    if data:
        out.append(Finding("restore", Severity.CRITICAL,
                           f"data corruption detected: DR drill of {report['backup_id']} failed",
                           "; ".join(f"{c['name']}: {c['detail']}" for c in data)[:1000]))
    if unproven:
        out.append(Finding("unverified", Severity.WARNING,
                           f"DR drill of {report.get('backup_id') or 'the backup'} could not prove recoverability",
                           "; ".join(f"{c['name']}: {c['detail']}" for c in unproven)[:1000]))
    if missed:
        out.append(Finding("objectives", Severity.WARNING,
                           "DR drill missed its recovery objective",
                           "; ".join(f"{c['name']}: {c['detail']}" for c in missed)))
    return out


@task(name="drill-teardown", timeout_seconds=600, cache_policy=NO_CACHE)
def teardown(scratch: engine.Scratch) -> None:
    scratch.teardown()


# -- physical mode ---------------------------------------------------------------------------

@task(name="drill-physical-select", timeout_seconds=300, **_opts)
def physical_select(settings: Settings, backup: str, target: Any) -> Manifest:
    from bvh_ops.drill import physical

    return physical.select(settings, backup, target)


@task(name="drill-physical-fetch-verify", timeout_seconds=6 * 3600, **_opts)
def physical_verify(settings: Settings, manifest: Manifest, target: Any, scratch: str | None = None) -> list[CheckResult]:
    """Deep verify of the chain and the WAL's reach. ``scratch`` (the physical restore's
    throw-away directory): each base, as it is decrypted and checked, is also extracted there
    for the restore (kept only once it verified: one decryption per base, not two)."""
    from checks.physical_drill_suite import verify_chain_and_wal

    into = None
    if scratch is not None:
        from bvh_ops.maintenance.disk import write_owner

        try:
            write_owner(Path(scratch))  # weekly disk cleanup removes it once this process is gone
            into = Path(scratch)
        except OSError as exc:  # nothing extracted: the restore fetches and decrypts the bases itself
            get_run_logger().info("the verified bases are not extracted for the restore (%s): it decrypts them again",
                                  exc)
    return verify_chain_and_wal(settings, manifest, target, extract_into=into)


@task(name="drill-physical-restore", timeout_seconds=6 * 3600, **_opts)
def physical_restore(settings: Settings, drill_id: str, manifest: Manifest, target: Any) -> tuple[Any, dict]:
    """Fetch the chain (the bases physical_verify extracted are taken as they are),
    pg_combinebackup, pg_verifybackup, recover to the target through wal-fetch and promote;
    returns the running copy and the restore report."""
    from bvh_ops.drill import physical

    scratch, report = physical.restore(settings, drill_id, manifest, target)
    return scratch, report.to_json()


@task(name="drill-physical-checks", timeout_seconds=6 * 3600, **_opts)
def physical_checks(settings: Settings, scratch: Any, target: datetime | None,
                    disaster: datetime) -> tuple[list[CheckResult], datetime | None, datetime | None]:
    """pg_amcheck, PITR of the append-only tables against the live source, invariants,
    freshness. Returns the checks, the newest restored commit and the newest source commit
    before the disaster time (for the RPO when there is no explicit target)."""
    from checks.physical_drill_suite import check_amcheck

    source = settings.database_url.get_secret_value() if settings.database_url else None
    if source is None:
        return [CheckResult("physical_checks", CheckStatus.NOT_VERIFIED, "no database_url to check against")], None, None
    dsn = scratch.dsn(source)
    secrets = [p for p in (_password(source),) if p]
    zone = committime.source_time_zone(source, dsn)
    newest = committime.newest_commit(dsn, settings.append_only_tables, zone)
    # Time targets cut at the target; LSN/name targets and the end of the archive at the
    # newest restored commit (rows after it are the data loss the RPO measures).
    cutoff_at = target or newest or disaster
    cutoff = cutoff_at - timedelta(seconds=settings.pitr_margin_seconds)
    from concurrent.futures import ThreadPoolExecutor

    # pg_amcheck (restore_jobs relations at a time) runs beside the PITR comparison and the
    # invariants: it reads the restored cluster's pages, they the rows of a few tables.
    with ThreadPoolExecutor(1, thread_name_prefix="bvh-amcheck") as pool:
        amcheck = pool.submit(drill_suite.guarded, "pg_amcheck",
                              lambda: check_amcheck(dsn, scratch.bin_dir, jobs=settings.restore_jobs), secrets)
        pitr = drill_suite.guarded("pitr_append_only", lambda: drill_suite.check_pitr(
            dsn, source, settings.append_only_tables, cutoff, zone), secrets)
        invariants = drill_suite.guarded("invariants", lambda: drill_suite.check_invariants(
            dsn, settings.invariants, parallel_workers=drill_suite.parallel_checks()), secrets)
        results = amcheck.result()
    results += [CheckResult(f"physical_{r.name}", r.status, r.detail) for r in pitr]
    results += [CheckResult(f"physical_{r.name}", r.status, r.detail) for r in invariants]
    fresh = drill_suite.check_freshness(newest, target or disaster)
    results.append(CheckResult("physical_freshness", fresh.status, fresh.detail))
    source_newest = None
    if target is None:
        try:
            source_newest = committime.newest_commit(source, settings.append_only_tables, zone, before=disaster)
        except Exception:  # noqa: BLE001 - the RPO is then measured against the disaster time
            source_newest = None
    return results, newest, source_newest


@task(name="drill-physical-teardown", timeout_seconds=600,
      cache_policy=NO_CACHE)
def physical_teardown(scratch: Any) -> None:
    scratch.teardown()
