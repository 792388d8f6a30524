"""Incremental backup (every 6 hours): crash orphaned runs -> collect leftovers -> physical backup
(pg_basebackup --incremental on the chain's newest backup; a full one when no chain exists yet; a WAL-only
increment on PostgreSQL < 17) -> checks (verify, chain, PostgreSQL's backup_manifest, WAL
continuity), inside one Prefect transaction whose rollback deletes the backup -> retention of
chains and WAL -> artifacts."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.transactions import transaction

from bvh_ops.archive.render import retention_markdown
from bvh_ops.config import load_settings
from flows.artifacts import physical_markdown
from flows.naming import target_label
from tasks.backup_tasks import collect_incomplete
from tasks.common import retrying
from tasks.orphans import reap_orphaned_runs
from tasks.physical_tasks import check_physical_backup, retain_chains, take_physical_backup


def _run_name() -> str:
    params = flow_run.parameters or {}
    return f"{params.get('kind', 'incremental')}-backup {target_label(load_settings())}"


@flow(name="incremental-backup", flow_run_name=_run_name, log_prints=True, retries=0)
def incremental_backup(kind: Literal["incremental", "full"] = "incremental",
                       retention_dry_run: bool = False) -> dict[str, Any]:
    """Take, check and retain a physical backup of the configured target's cluster.

    Args:
        kind: incremental (default; a full one when no chain exists yet) or full (a new chain).
        retention_dry_run: log what retention would delete instead of deleting it.
    """
    settings = load_settings()
    logger = get_run_logger()
    orphaned = reap_orphaned_runs()
    removed = retrying(collect_incomplete, settings)(settings)
    with transaction():
        result = retrying(take_physical_backup, settings)(settings, kind)
        checked = retrying(check_physical_backup, settings)(settings, result)
    checks = checked["checks"]
    retention = retrying(retain_chains, settings)(settings, dry_run=retention_dry_run,
                                                  wal_archive=checked["wal_archive"])
    create_markdown_artifact(key="retention-plan", markdown=retention_markdown(retention),
                             description="GFS retention: kept, deleted and held backups with their reasons")
    create_markdown_artifact(key=f"{result['kind']}-backup-summary",
                             markdown=physical_markdown(result, checks, retention, removed),
                             description=f"{result['kind']} backup {result['backup_id']}")
    create_table_artifact(key="physical-backup-checks", table=checks,
                          description=f"Checks of {result['backup_id']}")
    logger.info("%s backup %s committed and checked", result["kind"], result["backup_id"])
    result.update({"checks": checks, "check_seconds": checked["seconds"], "retention": retention,
                   "incomplete_removed": removed, "orphaned_runs": orphaned})
    return result


if __name__ == "__main__":
    incremental_backup()
