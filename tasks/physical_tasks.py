"""Tasks of the physical backups (full and incremental): take one (rolled back if its checks
fail inside the flow's transaction), check it, retain chains and prune WAL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import get_transaction

from bvh_ops.config import Settings
from bvh_ops.errors import IntegrityError
from bvh_ops.pg.physinfo import PhysicalInfo
from bvh_ops.repository.open import open_repository
from bvh_ops.results import CheckStatus
from tasks.common import delete_on_rollback, retry_transient_only


@task(name="take-physical-backup", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=12 * 3600)
def take_physical_backup(settings: Settings, kind: str, klass: str | None = None) -> dict[str, Any]:
    """pg_basebackup (full or --incremental) streamed into the repository, or a WAL-only
    increment on PostgreSQL < 17; commits its manifest (``klass``: its class, e.g. monthly-archive)."""
    from bvh_ops.physical.backup import physical_json, run_physical_backup

    result = run_physical_backup(settings, kind, klass=klass)
    txn = get_transaction()
    if txn is not None:
        txn.set("backup_id", result.manifest.backup_id)
        txn.set("settings", settings)
    doc = physical_json(result)
    if doc.get("mode") == "wal-only":
        get_run_logger().warning("PostgreSQL %s: native incremental backups need 17+; recorded a WAL-only increment",
                                 doc["server_version"])
    get_run_logger().info("%s backup %s: %d bytes in, %d stored", doc["kind"], doc["backup_id"], doc["bytes_in"],
                          doc["bytes_stored"])
    return doc


take_physical_backup.on_rollback(delete_on_rollback)


@task(name="check-physical-backup", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=3600)
def check_physical_backup(settings: Settings, backup: dict[str, Any]) -> list[dict[str, str]]:
    """Shallow verify, chain, PostgreSQL's backup_manifest, WAL continuity since the base."""
    from bvh_ops.physical.backup import chain_of
    from bvh_ops.repository.verify import verify_backup
    from bvh_ops.wal.archive import wal_continuity
    from checks.physical_suite import run_physical_suite

    repo, _ = open_repository(settings)
    backup_id = backup["backup_id"]
    manifest = repo.trusted_manifest(backup_id, purpose="check")
    verify = verify_backup(repo, backup_id)
    base = chain_of(repo, manifest)[0]
    info = PhysicalInfo.of(manifest)
    if not info.wal_only:  # a WAL-only increment waited for its own segment
        from bvh_ops.physical.backup import wait_backup_wal_archived

        wait_backup_wal_archived(settings, manifest)
    wal = wal_continuity(repo.store, base)
    results = run_physical_suite(repo, manifest, verify, wal)
    if info.archive_mode != "off":
        from bvh_ops.physical.backup import archiver_status
        from checks.physical_suite import check_archiver

        results.append(check_archiver(archiver_status(settings), settings.rpo_objective_seconds))
    out = [r.to_json() for r in results]
    bad = [r for r in results if r.status is not CheckStatus.PASSED]
    if bad:
        names = ", ".join(f"{r.name} ({r.status}: {r.detail})" for r in bad)
        raise IntegrityError(f"backup {backup_id} failed its checks: {names}")
    return out


@task(name="retain-chains", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=3600)
def retain_chains(settings: Settings, *, dry_run: bool = False) -> dict[str, Any]:
    """Retention over every backup (parents of kept backups are kept), then WAL older than the
    oldest kept physical base is pruned."""
    from bvh_ops.expire import apply_plan, policy_of

    repo, _ = open_repository(settings)
    return apply_plan(repo, now=datetime.now(UTC), policy=policy_of(settings), settings=settings,
                      dry_run=dry_run, log=get_run_logger())
