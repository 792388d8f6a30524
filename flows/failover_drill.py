"""Failover drill: build a standby from the replica repository → let it catch up → promote
(the failover's checks) → the DR drill's physical checks → RTO (start → promoted and checked)
and RPO (the primary's newest commit at promotion − the newest commit on the promoted copy)
against the runbook's objectives (database 15 minutes, data loss 5 minutes, full system
1 hour) → record, findings, artifact → teardown. A drill that did not pass fails its run."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from bvh_ops.config import load_settings
from bvh_ops.drill import engine
from bvh_ops.drill.objectives import Objectives, objective_checks, physical_rpo, rto_seconds
from bvh_ops.drill.physical import PhysicalScratch
from bvh_ops.errors import BvhOpsError
from bvh_ops.maintenance.disk import write_owner
from bvh_ops.results import CheckResult, CheckStatus
from flows.artifacts import drill_markdown
from flows.dr_drill import DrillFailed
from tasks import drill_tasks as dt
from tasks import standby_tasks as t
from tasks.common import retrying


def _run_name() -> str:
    p = flow_run.parameters or {}
    return f"failover-drill from {p.get('source', 'replica')}"


@flow(name="failover-drill", flow_run_name=_run_name, retries=0)
def failover_drill(source: Literal["replica", "primary"] = "replica", backup: str = "latest",
                   catch_up_timeout: float = 600.0) -> dict[str, Any]:
    """Fail over to a standby built from the repository and measure cross-region RTO/RPO.

    Args:
        source: the repository the standby is built from: replica (the cross-region copy) or primary.
        backup: the base backup id, or "latest".
        catch_up_timeout: seconds the standby may take to replay what the repository holds.
    """
    settings = load_settings()
    logger = get_run_logger()
    started = engine.utcnow()
    drill_id = "failover-" + engine.new_drill_id(started)
    objectives = Objectives(settings.rto_objective_seconds, settings.rpo_objective_seconds)
    root = (Path(settings.state_dir) / "drills" / drill_id).resolve()
    data = root / "data"
    write_owner(root)  # weekly disk cleanup removes it if this process dies
    stages: list[dict[str, Any]] = []
    checks: list[CheckResult] = []
    meta: dict[str, Any] = {}
    rto = rpo = None
    current = "standby"

    @contextmanager
    def stage(name: str):
        nonlocal current
        current = name
        t0 = time.monotonic()
        try:
            yield
        finally:
            stages.append({"name": name, "seconds": round(time.monotonic() - t0, 3)})

    try:
        try:
            with stage("standby"):
                meta = retrying(t.create_standby, settings)(settings, data, source, backup)
            with stage("catch_up"):
                status = t.catch_up(settings, data, catch_up_timeout)
            checks.append(CheckResult("standby_caught_up", CheckStatus.PASSED if status["caught_up"] else
                                      CheckStatus.FAILED, f"replayed {status['replayed_segment']}, archive "
                                      f"{status['archive_newest']}: {status['lag_segments']} segments behind"))
            with stage("promote"):
                promoted = t.promote(settings, data)
            checks += [CheckResult(c["name"], CheckStatus(c["status"]), c["detail"]) for c in promoted["checks"]]
            promoted_at = datetime.fromisoformat(promoted["promoted_at"])
            scratch = PhysicalScratch(str(root), str(data), meta["bin_dir"], promoted["port"])
            with stage("checks"):
                results, newest, source_newest = dt.physical_checks(settings, scratch, None, promoted_at)
            checks += results
            rpo = physical_rpo(None, None, newest, source_newest, promoted_at)
            if all(c.passed for c in checks):
                rto = rto_seconds(started, engine.utcnow())
        except BvhOpsError as exc:
            checks.append(CheckResult(current, CheckStatus.FAILED, str(exc)))
            logger.error("failover drill stage %s failed: %s", current, exc)
        checks += objective_checks(rto, rpo, objectives)
        full = objective_checks(rto, None, Objectives(settings.full_system_rto_objective_seconds, 1))[0]
        checks.append(CheckResult("full_system_rto_objective", full.status, full.detail))
        passed = all(c.passed for c in checks)
        report: dict[str, Any] = {
            "drill_id": drill_id, "passed": passed, "mode": "failover", "source": source,
            "backup_id": meta.get("backup_id"), "started_at": started.isoformat(), "target": None,
            "rto_seconds": round(rto, 3) if rto is not None else None,
            "rpo_seconds": round(rpo, 3) if rpo is not None else None,
            "objectives": {"rto_seconds": objectives.rto_seconds, "rpo_seconds": objectives.rpo_seconds,
                           "full_system_rto_seconds": settings.full_system_rto_objective_seconds},
            "scratch": f"standby {data} from the {source} repository {meta.get('repository', '?')}",
            "stages": stages, "checks": [c.to_json() for c in checks]}
        with stage("report"):
            report["finished_at"] = engine.utcnow().isoformat()
            try:
                retrying(dt.record, settings)(settings, report, source="failover-drill")
            except BvhOpsError as exc:
                checks.append(CheckResult("report", CheckStatus.FAILED, str(exc)))
                report["checks"] = [c.to_json() for c in checks]
                report["passed"] = passed = False
            create_markdown_artifact(key="failover-drill-report", markdown=drill_markdown(report),
                                     description=f"Failover drill {drill_id} from the {source} repository")
            create_table_artifact(key="failover-drill-checks", table=report["checks"],
                                  description=f"Checks of failover drill {drill_id}")
    finally:
        with stage("teardown"):
            t.teardown(data, root)
    report["stages"] = stages
    if not passed:
        bad = [c for c in checks if not c.passed]
        raise DrillFailed(f"failover drill {drill_id} failed: " + ", ".join(f"{c.name} {c.status}" for c in bad),
                          report)
    logger.info("failover drill %s passed: RTO %.1f s, RPO %s s", drill_id, report["rto_seconds"],
                report["rpo_seconds"])
    return report


if __name__ == "__main__":
    failover_drill()
