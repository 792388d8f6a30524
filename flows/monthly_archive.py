"""Monthly archive (the runbook's ``0 0 1 * *`` UTC): a full logical dump and a physical full
(with the WAL that makes it consistent), both of class monthly-archive -> deep verify -> DR drill
of the logical archive -> Object Lock until the class's retention ends -> (replication) ->
artifact. The run succeeds only after the drill passed; a failed verify or drill fails it and
raises the critical "data corruption detected" finding."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.transactions import transaction

from bvh_ops.archive.monthly import archive_month
from bvh_ops.archive.render import archive_markdown
from bvh_ops.config import Settings, load_settings
from bvh_ops.errors import BvhOpsError, IntegrityError
from bvh_ops.repository.gfs import ARCHIVE_CLASS
from tasks.archive_tasks import (
    archive_finding,
    deep_verify_archive,
    lock_archive_objects,
    replicate_archive_objects,
)
from tasks.backup_tasks import check_backup, collect_incomplete, take_logical_backup
from tasks.common import retrying
from tasks.orphans import reap_orphaned_runs


class ArchiveFailed(IntegrityError):
    """The monthly archive did not pass (verify, drill, lock or a step before); ``report`` holds
    what was done."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _run_name() -> str:
    return f"monthly-archive {archive_month(datetime.now(UTC))}"


@flow(name="monthly-archive", flow_run_name=_run_name, retries=0)
def monthly_archive(physical: Literal["auto", "on", "off"] = "auto") -> dict[str, Any]:
    """Take, verify, drill and lock the month's archive.

    Args:
        physical: auto = a physical full where the target archives WAL and accepts replication
            connections; on = always (fails if it cannot); off = the logical dump only.
    """
    from flows.dr_drill import DrillFailed, dr_drill

    settings = load_settings()
    logger = get_run_logger()
    taken = datetime.now(UTC)
    month = archive_month(taken)
    report: dict[str, Any] = {"month": month, "passed": False, "backups": [], "class": ARCHIVE_CLASS,
                              "lock": {"detail": "not locked: the archive did not pass verify and drill"}}
    reap_orphaned_runs()
    report["incomplete_removed"] = retrying(collect_incomplete, settings)(settings)
    try:
        # 1. The full logical dump, checked like the daily one (a failed check rolls it back).
        with transaction():
            logical = retrying(take_logical_backup, settings)(settings, ARCHIVE_CLASS)
            retrying(check_backup, settings)(settings, logical)
        report["backups"].append({k: logical[k] for k in ("backup_id", "kind", "bytes_in", "bytes_stored")})
        # 2. The physical full; its check waits until the stop segment is archived and checks
        #    WAL continuity from its start: the WAL that makes it consistent is in the archive.
        _physical(settings, physical, report, logger)
        # 3. Deep verify every archive backup (decrypt, decompress, hash).
        for b in report["backups"]:
            v = retrying(deep_verify_archive, settings)(settings, b["backup_id"])
            b["verify"] = "passed" if v["ok"] else "FAILED"
            if not v["ok"]:
                raise IntegrityError(f"monthly archive {month}: deep verify of {b['backup_id']} failed: {v['detail']}")
        # 4. Drill the logical archive: restore into a scratch server, every check, RTO/RPO.
        try:
            drill = dr_drill(backup=logical["backup_id"], mode="logical")
        except DrillFailed as exc:
            report["drill"] = exc.report
            raise IntegrityError(f"monthly archive {month}: {exc}") from None
        report["drill"] = {k: drill.get(k) for k in ("drill_id", "passed", "rto_seconds", "rpo_seconds",
                                                      "objectives", "checks")}
        # 5. Lock (only now: a corrupt archive must not become undeletable for years).
        report["lock"] = retrying(lock_archive_objects, settings)(
            settings, [b["backup_id"] for b in report["backups"]], taken)
        for b in report["backups"]:
            b["retain_until"] = report["lock"]["retain_until"]
            b["lock_mode"] = report["lock"]["mode"]
        wal = report["lock"]["wal_segments"]
        if wal:
            report["wal"] = {"first": wal[0], "last": wal[-1], "segments": len(wal),
                             "locked": len(wal) if report["lock"]["locked"] else 0}
        # 6. Replication to the second repository, checked and locked there too.
        report["replication"] = replicate_archive_objects(
            settings, [b["backup_id"] for b in report["backups"]], taken)
        report["passed"] = True
    except BvhOpsError as exc:
        report["error"] = str(exc)
        problem = retrying(archive_finding, settings)(settings, month, str(exc))
        if problem:
            logger.warning("could not raise the archive finding: %s", problem)
        raise ArchiveFailed(str(exc), report) from exc
    finally:
        create_markdown_artifact(key="monthly-archive", markdown=archive_markdown(report),
                                 description=f"Monthly archive {month}")
    retrying(archive_finding, settings)(settings, month, None)
    logger.info("monthly archive %s: %s; drill passed (RTO %s s)", month,
                ", ".join(b["backup_id"] for b in report["backups"]), report["drill"]["rto_seconds"])
    return report


def _physical(settings: Settings, physical: str, report: dict[str, Any], logger) -> None:
    if physical == "off":
        report["physical_skipped"] = "physical=off"
        return
    from bvh_ops.physical.backup import physical_possible
    from tasks.physical_tasks import check_physical_backup, take_physical_backup

    possible, why = physical_possible(settings)
    if not possible and physical == "auto":
        report["physical_skipped"] = why
        logger.warning("monthly archive without a physical full (physical=auto): %s", why)
        return
    with transaction():
        full = retrying(take_physical_backup, settings)(settings, "full", ARCHIVE_CLASS)
        retrying(check_physical_backup, settings)(settings, full)
    report["backups"].append({**{k: full[k] for k in ("backup_id", "kind", "bytes_in", "bytes_stored")},
                              "start_lsn": full.get("start_lsn"), "stop_lsn": full.get("stop_lsn")})


if __name__ == "__main__":
    monthly_archive()
