"""Tasks of the daily backup. Each does one thing; ``take_logical_backup`` registers a rollback
hook so a backup whose checks fail inside the flow's transaction is deleted again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from bvh_ops.config import Settings
from bvh_ops.errors import IntegrityError
from bvh_ops.progress import LogEvery, listening
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import verify_backup
from bvh_ops.results import CheckStatus
from tasks.common import delete_on_rollback, retry_transient_only


@task(name="collect-incomplete", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=600)
def collect_incomplete(settings: Settings) -> list[str]:
    """Remove leftovers of backups that never committed (writer dead, or older than the grace)."""
    repo, _ = open_repository(settings)
    removed = repo.collect_incomplete(datetime.now(UTC), settings.incomplete_grace_hours)
    if removed:
        get_run_logger().warning("removed %d incomplete backup(s): %s", len(removed), ", ".join(removed))
    return removed


@task(name="take-logical-backup", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=12 * 3600)
def take_logical_backup(settings: Settings, klass: str | None = None) -> dict[str, Any]:
    """Snapshot + fingerprints + pg_dump streamed into the repository; commits the manifest
    (``klass``: the backup's class in the manifest, e.g. monthly-archive)."""
    # Here, not at the top: the physical flow imports this module for collect-incomplete and
    # needs none of the dump's modules (numpy for the fingerprints among them).
    from bvh_ops.logical.backup import run_logical_backup

    logger = get_run_logger()
    with listening(LogEvery(logger.info)):
        result = run_logical_backup(settings, klass=klass)
    txn = get_transaction()
    if txn is not None:
        txn.set("backup_id", result.manifest.backup_id)
        txn.set("settings", settings)
    out = result.to_json()
    out["table_bytes"] = result.manifest.extra.get("table_bytes", {})
    out["tables_in_snapshot"] = result.manifest.extra.get("tables_in_snapshot", [])
    logger.info("backup %s: %d bytes in, %d stored", out["backup_id"], out["bytes_in"], out["bytes_stored"])
    return out


take_logical_backup.on_rollback(delete_on_rollback)


@task(name="check-backup", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=3600)
def check_backup(settings: Settings, backup: dict[str, Any]) -> list[dict[str, str]]:
    """GX suite over the stored manifest vs the snapshot's stats, plus the shallow verify."""
    from checks.backup_suite import run_backup_suite

    repo, _ = open_repository(settings)
    backup_id = backup["backup_id"]
    manifest = repo.load_manifest(backup_id).manifest
    verify = verify_backup(repo, backup_id)
    results = run_backup_suite(backup["tables_in_snapshot"], backup["tables"], manifest, verify)
    bad = [r for r in results if r.status is not CheckStatus.PASSED]
    out = [r.to_json() for r in results]
    if bad:
        names = ", ".join(f"{r.name} ({r.status}: {r.detail})" for r in bad)
        raise IntegrityError(f"backup {backup_id} failed its checks: {names}")
    return out


@task(name="apply-retention", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=3600)
def apply_retention(settings: Settings, *, dry_run: bool = False, wal_archive: dict | None = None) -> dict[str, Any]:
    """Delete backups the GFS retention plan marks DELETE (never the newest min_redundancy of
    each family, never a parent of a kept backup, never a locked one: HELD) and prune WAL
    (``wal_archive``: this run's listing of the WAL archive, when a physical check took one)."""
    from bvh_ops.expire import apply_plan, policy_of

    repo, _ = open_repository(settings)
    return apply_plan(repo, now=datetime.now(UTC), policy=policy_of(settings), settings=settings,
                      dry_run=dry_run, log=get_run_logger(), archive=wal_archive)
