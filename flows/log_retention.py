"""Log retention as the runbook schedules it: ``cleanup-logs`` daily at 02:00 UTC (rotate the
platform's log files that are configured for it, collected first; archive the days past the hot
window, verify, drop them from the ops database; delete archives past their category's retention) and ``archive-logs`` monthly on the 1st at 04:00 (the same plan, then every
archive still kept read back and checked against its index: an archive that rotted is found
while the hot copy may still exist in a backup). One plan, one code path; a failed archive keeps
its day in the hot store and fails the run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from bvh_ops.config import load_settings
from bvh_ops.errors import DatabaseUnavailable, IntegrityError
from bvh_ops.logs.archive import apply, state, verify_archive
from bvh_ops.logs.retention import held_back, plan
from bvh_ops.opsdb.database import running_dsn
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect
from bvh_ops.storage import open_store


@task(name="log-retention-apply", cache_policy=NO_CACHE)
def apply_retention(dsn: str) -> dict[str, Any]:
    settings = load_settings()
    now = datetime.now(UTC)
    with connect(dsn, autocommit=True) as conn:
        migrate(conn)
        partitions, archives, holds = state(conn, now)
        actions = plan(partitions, archives, holds, now, hot_days=settings.log_hot_days,
                       retention=settings.log_retention_days)
        outcome = apply(conn, settings, actions, now) if actions else []
        kept = held_back(partitions, archives, holds, now, retention=settings.log_retention_days)
    return {"actions": outcome, "held": kept}


@task(name="log-archives-verify", cache_policy=NO_CACHE)
def verify_archives(dsn: str) -> list[dict[str, Any]]:
    settings = load_settings()
    store = open_store(settings)
    with connect(dsn, autocommit=True) as conn:
        keys = [r[0] for r in conn.execute("SELECT object_key FROM ops.log_archives WHERE deleted_at IS NULL "
                                           "ORDER BY day, category")]
    out = []
    for key in keys:
        try:
            verify_archive(settings, store, key, json.loads(store.get_bytes(key + ".json")))
            out.append({"key": key, "ok": True, "detail": ""})
        except Exception as exc:  # noqa: BLE001 - every archive is checked; failures reported together
            out.append({"key": key, "ok": False, "detail": f"{type(exc).__name__}: {str(exc)[:300]}"})
    return out


@task(name="log-rotation", cache_policy=NO_CACHE)
def rotate_logs(dsn: str) -> list[dict[str, Any]]:
    """The platform's log files (sources with rotate_bytes): collected first, so that a file
    past its size can be rotated now (bvh_ops.logs.rotate)."""
    from bvh_ops.logs.collect import collect_configured
    from bvh_ops.logs.rotate import rotate_configured

    settings = load_settings()
    names = [s.name for s in settings.log_sources if s.rotate_bytes is not None]
    if not names:
        return []
    try:
        collect_configured(settings, names)
    except Exception as exc:  # noqa: BLE001 - nothing new collected: the plan waits for what is not
        get_run_logger().warning("collecting before the rotation failed: %s: %s", type(exc).__name__, str(exc)[:300])
    with connect(dsn, autocommit=True) as conn:
        return rotate_configured(settings, conn)


def _run(name: str, verify: bool) -> dict[str, Any]:
    logger = get_run_logger()
    dsn = running_dsn(load_settings())
    if not dsn:
        raise DatabaseUnavailable("the ops database is not running (bvh-ops opsdb start): no logs to keep")
    rotated: list[dict[str, Any]] = []
    if name == "cleanup-logs":
        try:
            rotated = rotate_logs(dsn)
        except Exception as exc:  # noqa: BLE001 - retention runs all the same; the run fails below
            rotated = [{"action": "rotate", "object": "log sources", "status": "failed", "seconds": 0.0,
                        "detail": f"{type(exc).__name__}: {str(exc)[:300]}"}]
    if rotated:
        create_table_artifact(key="log-rotation", table=rotated, description="platform log files rotated, sealed (cut mid-line) or deleted")
    doc = apply_retention(dsn)
    doc["rotation"] = rotated
    if doc["actions"]:
        create_table_artifact(key=name, table=doc["actions"], description=f"{name}: log retention actions")
    failed = [a for a in doc["actions"] if a.get("done") is False]
    if verify:
        doc["verified"] = verify_archives(dsn)
        bad = [v for v in doc["verified"] if not v["ok"]]
        lines = [f"# Log archives: {len(doc['verified'])} read back, {len(bad)} damaged", ""]
        lines += [f"- `{v['key']}`: {v['detail']}" for v in bad]
        create_markdown_artifact(key="log-archives", markdown="\n".join(lines), description="log archives verified")
        if bad:
            raise IntegrityError(f"{len(bad)} log archive(s) damaged: {', '.join(v['key'] for v in bad[:5])}")
    for h in doc["held"]:
        logger.info("kept by a legal hold: %s %s (%s)", h["category"], h["day"], h["hold"])
    bad_rotation = [r for r in rotated if r["status"] == "failed"]
    for r in bad_rotation:
        logger.error("log rotation of %s failed: %s", r["object"], r["detail"])
    if bad_rotation and not failed:
        raise IntegrityError(f"{len(bad_rotation)} log rotation action(s) failed: "
                             + "; ".join(f"{r['object']}: {r['detail']}" for r in bad_rotation[:3]))
    if failed:
        raise IntegrityError(f"{len(failed)} log retention action(s) failed (their days stay in the hot store): "
                             + "; ".join(f"{a['action']} {a['category']} {a['day']}: {a.get('error') or a.get('skipped')}"
                                         for a in failed[:3]))
    return doc


@flow(name="cleanup-logs", flow_run_name="cleanup-logs", retries=0, log_prints=False)
def cleanup_logs() -> dict[str, Any]:
    """Daily: archive what left the hot window, drop it from the ops database, delete expired archives."""
    return _run("cleanup-logs", verify=False)


@flow(name="archive-logs", flow_run_name="archive-logs", retries=0, log_prints=False)
def archive_logs() -> dict[str, Any]:
    """Monthly: the same, then every kept archive read back and checked."""
    return _run("archive-logs", verify=True)
