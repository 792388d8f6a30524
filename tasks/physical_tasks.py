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
from bvh_ops.results import CheckStatus, StepTimer
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
def check_physical_backup(settings: Settings, backup: dict[str, Any]) -> dict[str, Any]:
    """Shallow verify, chain, PostgreSQL's backup_manifest, WAL continuity since the base, the
    archiver. Returns {"checks": [...], "seconds": {step: seconds}, "wal_archive": the one
    listing of the WAL archive it took (for retention's pruning plan; not for reports)}."""
    from bvh_ops.physical.backup import archiver_status, chain_of, wait_backup_wal_archived
    from bvh_ops.repository.verify import verify_backup
    from bvh_ops.wal.archive import scan_archive, wal_continuity
    from checks.physical_suite import check_archiver, run_physical_suite

    steps = StepTimer()
    repo, _ = open_repository(settings)
    backup_id = backup["backup_id"]
    with steps("manifest"):
        manifest = repo.trusted_manifest(backup_id, purpose="check")
    with steps("verify"):  # the stored bytes against their sha256 (while the stop segment is archived)
        verify = verify_backup(repo, backup_id)
    with steps("chain"):
        chain = chain_of(repo, manifest)
    info = PhysicalInfo.of(manifest)
    waited = None
    if not info.wal_only:  # a WAL-only increment waited for its own segment
        with steps("wait_archived"):
            waited = wait_backup_wal_archived(settings, manifest, store=repo.store)
    with steps("wal_listing"):  # one listing, after the stop segment: continuity and retention read it
        archive = scan_archive(repo.store)
    with steps("wal_continuity"):
        wal = wal_continuity(repo.store, chain[0], archive=archive)
    with steps("suite"):
        results = run_physical_suite(repo, manifest, verify, wal, chain)
    if info.archive_mode != "off":
        with steps("archiver"):
            results.append(check_archiver(archiver_status(settings), settings.rpo_objective_seconds))
    seconds = steps.seconds
    if waited is not None:  # the wait began when pg_basebackup ended; this task blocked for the rest
        seconds["stop_segment_since_backup_end"] = round(waited["since_backup_end"], 3)
    out = [r.to_json() for r in results]
    bad = [r for r in results if r.status is not CheckStatus.PASSED]
    if bad:
        names = ", ".join(f"{r.name} ({r.status}: {r.detail})" for r in bad)
        raise IntegrityError(f"backup {backup_id} failed its checks: {names}")
    get_run_logger().info("checks of %s passed in %.2f s: %s", backup_id, sum(v for k, v in seconds.items()
                          if k != "stop_segment_since_backup_end"), seconds)
    return {"checks": out, "seconds": seconds, "wal_archive": archive}


@task(name="retain-chains", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=3600)
def retain_chains(settings: Settings, *, dry_run: bool = False, wal_archive: dict | None = None) -> dict[str, Any]:
    """Retention over every backup (parents of kept backups are kept), then WAL older than the
    oldest kept physical base is pruned. ``wal_archive``: the check's listing of the WAL archive
    (listed once per run; a segment archived since is newer than every base, never pruned)."""
    from bvh_ops.expire import apply_plan, policy_of

    repo, _ = open_repository(settings)
    return apply_plan(repo, now=datetime.now(UTC), policy=policy_of(settings), settings=settings,
                      dry_run=dry_run, log=get_run_logger(), archive=wal_archive)
