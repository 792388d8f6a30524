"""Tasks of the file-set snapshots the daily backup takes after the database (#18): snapshot one
set, check it, and report the run's findings to alerting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bvh_ops.alerting.findings import report_findings
from bvh_ops.audit.record import record as audit_record
from bvh_ops.config import Settings
from bvh_ops.files.gc import verify_snapshots
from bvh_ops.files.outcome import SOURCE, set_checks, set_findings
from bvh_ops.files.snapshot import take_snapshot
from bvh_ops.opsdb.database import ops_database
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect
from bvh_ops.repository.open import open_repository
from tasks.common import retry_transient_only


@task(name="snapshot-file-set", task_run_name="snapshot-file-set {set_name}", cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient_only, timeout_seconds=6 * 3600)
def snapshot_file_set(settings: Settings, set_name: str) -> dict[str, Any]:
    """One set's snapshot, committed (partial or not); raises when nothing was committed."""
    result = take_snapshot(settings, set_name).to_json()
    log = get_run_logger()
    log.info("file set %s: snapshot %s, %d entries (%d unchanged, not read), %d bytes read, %d stored%s",
             set_name, result["snapshot_id"], result["files"], result["files_unchanged"], result["bytes_in"],
             result["bytes_stored"], " PARTIAL" if result["partial"] else "")
    audit_record(settings, None, "files.snapshot", result["snapshot_id"],
                 {k: result[k] for k in ("set", "files", "bytes_in", "bytes_stored", "partial")})
    return result


@task(name="check-file-set", task_run_name="check-file-set {result[set]}", cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient_only, timeout_seconds=3600)
def check_file_set(settings: Settings, result: dict[str, Any]) -> list[dict[str, str]]:
    """Complete (not partial) and every object of this snapshot there with its recorded size."""
    repo, _ = open_repository(settings)
    verify = [c.to_json() for c in verify_snapshots(repo.store, repo.trusted_keys, set_name=result["set"],
                                                    snapshot_id=result["snapshot_id"])]
    return set_checks(result, verify)


@task(name="report-file-set-findings", cache_policy=NO_CACHE, timeout_seconds=300)
def report_file_set_findings(settings: Settings, outcomes: list[dict[str, Any]]) -> dict[str, int]:
    """This run's findings (partial: warning; failed: critical) as the complete set of source
    ``file-sets``: a set that is fine again clears its finding."""
    with ops_database(settings) as dsn, connect(dsn, autocommit=True) as conn:
        migrate(conn)
        return report_findings(conn, SOURCE, set_findings(outcomes), datetime.now(UTC))


@task(name="retain-file-sets", cache_policy=NO_CACHE, retry_condition_fn=retry_transient_only, timeout_seconds=3600)
def retain_file_sets(settings: Settings, *, dry_run: bool = False) -> dict[str, Any]:
    """GFS retention of every set's snapshots (the backups' policy, one family per set), then,
    when any snapshot was forgotten, garbage collection of the content none references."""
    from bvh_ops.expire import policy_of
    from bvh_ops.files.gc import collect_garbage
    from bvh_ops.files.retention import forget_by_policy

    repo, _ = open_repository(settings)
    now = datetime.now(UTC)
    decisions = forget_by_policy(repo.store, repo.trusted_keys, policy_of(settings), now=now, dry_run=dry_run,
                                 settings=settings)
    counts = {v: sum(str(d.verdict) == v for d in decisions) for v in ("KEEP", "DELETE", "HELD", "UNTRUSTED")}
    gc = collect_garbage(repo.store, repo.trusted_keys, now) if counts["DELETE"] and not dry_run else None
    get_run_logger().info("file-set retention%s: %s%s", " (dry run)" if dry_run else "",
                          ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n),
                          f"; gc deleted {gc['deleted']} objects ({gc['bytes_freed']} bytes)" if gc else "")
    return {"dry_run": dry_run, "counts": counts, "gc": gc,
            "decisions": [d.to_json() for d in decisions if str(d.verdict) != "KEEP"]}
