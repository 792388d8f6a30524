"""Daily backup (the runbook's full dump at 02:00 UTC): crash orphaned runs -> collect leftovers ->
snapshot-consistent dump -> checks, inside one Prefect transaction (a failed check rolls the backup back) ->
retention -> the configured file sets, each its own snapshot and check (#18) -> artifacts.

A file set that fails or is partial never undoes the database backup: the run still completes,
its result's ``file_sets_status`` says which set failed, and alerting gets a finding."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.transactions import transaction

from bvh_ops.archive.render import retention_markdown
from bvh_ops.config import Settings, load_settings
from flows.artifacts import backup_markdown, file_sets_markdown, table_rows
from flows.naming import target_label
from tasks.audit_tasks import audit_backups
from tasks.backup_tasks import apply_retention, check_backup, collect_incomplete, take_logical_backup
from tasks.common import retrying
from tasks.orphans import reap_orphaned_runs


def _run_name() -> str:
    params = flow_run.parameters or {}
    return f"daily-backup {params.get('target') or target_label(load_settings())}"


@flow(name="daily-backup", flow_run_name=_run_name, log_prints=True, retries=0)
def daily_backup(target: str | None = None, retention_dry_run: bool = False,
                 physical: Literal["auto", "on", "off"] = "auto") -> dict[str, Any]:
    """Take, check and retain the daily logical backup of the configured target, and start a
    new physical chain (a full pg_basebackup) the 6-hourly incrementals build on.

    Args:
        target: label shown in the run name (default: dbname@host:port of the configured target).
        retention_dry_run: log what retention would delete instead of deleting it.
        physical: auto = a physical full where the target accepts replication connections and
            archives WAL; on = always (fails if it cannot); off = logical only.
    """
    settings = load_settings()
    logger = get_run_logger()
    orphaned = reap_orphaned_runs()
    removed = retrying(collect_incomplete, settings)(settings)
    with transaction():
        result = retrying(take_logical_backup, settings)(settings)
        checks = retrying(check_backup, settings)(settings, result)
    physical_result = wal_archive = None
    if physical != "off":
        from bvh_ops.physical.backup import physical_possible
        from tasks.physical_tasks import check_physical_backup, take_physical_backup

        possible, why = physical_possible(settings)
        if possible or physical == "on":
            with transaction():
                physical_result = retrying(take_physical_backup, settings)(settings, "full")
                checked = retrying(check_physical_backup, settings)(settings, physical_result)
                physical_result.update(checks=checked["checks"], check_seconds=checked["seconds"])
                wal_archive = checked["wal_archive"]
        else:
            logger.info("no physical backup (physical=auto): %s", why)
    audit_backups(settings, [result, physical_result])
    plan = retrying(apply_retention, settings)(settings, dry_run=retention_dry_run, wal_archive=wal_archive)
    retention = plan["decisions"]
    create_markdown_artifact(key="retention-plan", markdown=retention_markdown(plan),
                             description="GFS retention: kept, deleted and held backups with their reasons")
    file_sets = snapshot_file_sets(settings, retention_dry_run) if settings.file_sets else None
    create_markdown_artifact(
        key="daily-backup-summary",
        markdown=backup_markdown(result, checks, retention, removed, physical_result)
        + (file_sets_markdown(file_sets) if file_sets is not None else ""),
        description=f"Daily backup {result['backup_id']}",
    )
    create_table_artifact(
        key="daily-backup-tables",
        table=table_rows(result),
        description=f"Per-table rows and bytes of {result['backup_id']}",
    )
    logger.info("daily backup %s committed and checked", result["backup_id"])
    result = {k: v for k, v in result.items() if k not in ("tables_in_snapshot",)}
    result["checks"] = checks
    result["retention"] = retention
    result["incomplete_removed"] = removed
    result["orphaned_runs"] = orphaned
    result["physical_backup_id"] = physical_result["backup_id"] if physical_result else None
    if physical_result:
        result["physical"] = {k: physical_result[k] for k in ("backup_id", "kind", "start_lsn", "stop_lsn",
                                                              "bytes_in", "bytes_stored", "seconds", "checks",
                                                              "check_seconds")}
    if file_sets is not None:
        result["file_sets"] = file_sets["sets"]
        result["file_sets_status"] = file_sets["status"]
        result["file_sets_retention"] = file_sets["retention"]
    return result


def snapshot_file_sets(settings: Settings, retention_dry_run: bool = False) -> dict[str, Any]:
    """Each configured set: its snapshot task, then its check task; a failure of one set is
    recorded and the next set still runs. Then the findings, GFS retention of the snapshots
    (and gc), then one summary line."""
    from bvh_ops.files.outcome import set_status, summary_line
    from tasks.file_tasks import check_file_set, report_file_set_findings, retain_file_sets, snapshot_file_set

    logger = get_run_logger()
    outcomes: list[dict[str, Any]] = []
    for fs in settings.file_sets:
        outcome: dict[str, Any] = {"set": fs.name, "class": fs.class_}
        state = retrying(snapshot_file_set, settings)(settings, fs.name, return_state=True)
        if state.is_completed():
            snap = state.result()
            outcome.update({k: snap[k] for k in ("snapshot_id", "files", "files_unchanged", "bytes_in",
                                                 "bytes_stored", "partial", "problems", "skipped", "seconds")})
            checked = retrying(check_file_set, settings)(settings, snap, return_state=True)
            if checked.is_completed():
                outcome["checks"] = checked.result()
            else:
                outcome["checks"] = [{"name": "verify", "status": "failed",
                                      "detail": f"could not run: {_error(checked)}"}]
        else:
            outcome["error"] = _error(state)
        outcome["status"] = set_status(outcome)
        outcomes.append(outcome)
    try:
        report_file_set_findings(settings, outcomes)
    except Exception as exc:  # noqa: BLE001 - the snapshots stand; say loudly that alerting did not hear of them
        logger.warning("FILE-SET FINDINGS NOT REPORTED to alerting: %s", exc)
    retained = retrying(retain_file_sets, settings)(settings, dry_run=retention_dry_run, return_state=True)
    retention = retained.result() if retained.is_completed() else {"error": _error(retained)}
    if "error" in retention:
        logger.warning("FILE-SET RETENTION DID NOT RUN: %s", retention["error"])
    status = summary_line(outcomes)
    failed = [o["set"] for o in outcomes if o["status"] != "ok"]
    (logger.warning if failed else logger.info)("%s", status)
    return {"sets": outcomes, "status": status, "retention": retention}


def _error(state: Any) -> str:
    exc = state.result(raise_on_failure=False)
    return str(exc) if isinstance(exc, BaseException) else (state.message or state.name or "failed")


if __name__ == "__main__":
    daily_backup()
