"""Tasks of the monthly archive: deep verify the archive's backups (a failure is the runbook's
critical "data corruption detected"), lock them, raise or clear the archive's finding."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bvh_ops.config import Settings
from bvh_ops.keys import load_identities
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import verify_backup
from tasks.common import retry_transient_only

_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_condition_fn": retry_transient_only}


@task(name="archive-deep-verify", timeout_seconds=6 * 3600, **_opts)
def deep_verify_archive(settings: Settings, backup_id: str) -> dict[str, Any]:
    """Decrypt, decompress and hash every object of one archive backup; the result goes to
    alerting (a failure: critical "data corruption detected")."""
    from bvh_ops.alerting.verify import report_verify

    repo, _ = open_repository(settings)
    results = verify_backup(repo, backup_id, identities=load_identities(settings.require_identity()))
    problem = report_verify(settings, results)
    if problem:
        get_run_logger().warning("could not report the verify of %s to alerting: %s", backup_id, problem)
    bad = [r for r in results if not r.ok]
    return {"backup_id": backup_id, "ok": bool(results) and not bad, "objects": len(results),
            "detail": "; ".join(f"{r.object}: {r.status} {r.detail}".strip() for r in bad)[:1000]
            or f"{len(results)} objects decrypted and hashed: all OK"}


@task(name="archive-lock", timeout_seconds=3600, **_opts)
def lock_archive_objects(settings: Settings, backup_ids: list[str], taken: datetime) -> dict[str, Any]:
    """S3 Object Lock on every object of the archive (and the WAL the physical full needs) until
    taken + keep_archive_months, in archive_lock_mode; file:// says it has no lock."""
    from bvh_ops.archive.monthly import lock_archive

    repo, _ = open_repository(settings)
    manifests = [repo.trusted_manifest(b, purpose="lock") for b in backup_ids]
    report = lock_archive(repo, manifests, taken=taken, months=settings.keep_archive_months,
                          mode=settings.archive_lock_mode)
    get_run_logger().info("monthly archive: %s", report.detail)
    return report.to_json()


@task(name="archive-replicate", timeout_seconds=6 * 3600, **_opts)
def replicate_archive_objects(settings: Settings, backup_ids: list[str], taken: datetime) -> str:
    """One replication pass (the whole repository: the archive and anything else not yet there),
    then the archive's backups checked committed on the replica and locked there as on the
    primary. A replica that cannot be reached or a unit that fails is reported, not raised: the
    archive stands on the primary and the `replicate` deployment (every 5 minutes) retries and
    alerts on its own."""
    from bvh_ops.archive.monthly import lock_archive
    from bvh_ops.errors import BvhOpsError
    from bvh_ops.replica.run import replicate

    if not settings.replica_repository:
        return "not configured (no replica_repository)"
    log = get_run_logger()
    try:
        rep = replicate(settings, datetime.now(UTC))
        replica, _ = open_repository(settings.for_replica())
        manifests = [replica.trusted_manifest(b, purpose="lock") for b in backup_ids]
        lock = lock_archive(replica, manifests, taken=taken, months=settings.keep_archive_months,
                            mode=settings.archive_lock_mode)
    except BvhOpsError as exc:
        log.warning("monthly archive NOT REPLICATED: %s", exc)
        return f"NOT REPLICATED: {exc} (the `replicate` deployment retries every 5 minutes)"
    failed = "; ".join(f"{u}: {e}" for u, e in rep.failures)
    text = (f"replicated to {rep.replica}: {rep.copied_objects} object(s) copied "
            f"({rep.server_side} server-side), each read back and checked; the archive's "
            f"{len(manifests)} backup(s) committed there; {lock.detail}")
    if failed:
        text += f"; other units failed (retried by `replicate`): {failed[:500]}"
    log.info("monthly archive: %s", text)
    return text


@task(name="archive-finding", timeout_seconds=60, **_opts)
def archive_finding(settings: Settings, month: str, problem: str | None) -> str | None:
    """Raise (``problem``) or clear the archive's critical finding; returns why it could not (or None)."""
    from bvh_ops.alerting.findings import Finding, clear_finding, raise_finding
    from bvh_ops.alerting.rules import Severity
    from bvh_ops.opsdb.database import running_dsn
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    dsn = running_dsn(settings)
    if dsn is None:
        return "no ops database running"
    try:
        with connect(dsn, autocommit=True, timeout=5) as conn:
            migrate(conn)  # idempotent: the findings table exists even before the first drill
            if problem:
                raise_finding(conn, "archive", Finding(f"monthly:{month}", Severity.CRITICAL,
                                                       f"data corruption detected: monthly archive {month} failed",
                                                       problem[:1000]), datetime.now(UTC))
            else:
                clear_finding(conn, "archive", f"monthly:{month}", datetime.now(UTC))
    except Exception as exc:  # noqa: BLE001 - the flow's own failure is the primary signal
        return type(exc).__name__
    return None
