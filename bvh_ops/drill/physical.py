"""The physical half of the DR drill (no Prefect): select a physical backup for the target,
restore it (pg_combinebackup, pg_verifybackup, recovery through wal-fetch, promote) into a
throw-away directory, tear it down. Its checks live in checks/physical_drill_suite.py."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from psycopg.conninfo import make_conninfo

from bvh_ops.config import Settings
from bvh_ops.maintenance.disk import write_owner
from bvh_ops.pg.tools import embedded_bin_dir, matching_bin_dir
from bvh_ops.physical.restore import RestoreReport, restore_physical, stop_server
from bvh_ops.physical.target import RecoveryTarget, select_backup
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.open import open_repository


def recovery_target(to_time: datetime | None, to_lsn: str | None) -> RecoveryTarget:
    return RecoveryTarget.from_options(to_time.isoformat() if to_time else None, to_lsn, None)


def select(settings: Settings, backup: str, target: RecoveryTarget) -> Manifest:
    repo, _ = open_repository(settings)
    return select_backup(repo, backup, target)


@dataclass
class PhysicalScratch:
    root: str
    data: str
    bin_dir: str
    port: int

    def dsn(self, source_dsn: str) -> str:
        """The source's DSN pointed at the restored copy (same roles and passwords)."""
        return make_conninfo(source_dsn, host="127.0.0.1", port=str(self.port), hostaddr=None)

    def teardown(self) -> None:
        stop_server(Path(self.data), Path(self.bin_dir))
        shutil.rmtree(self.root, ignore_errors=True)

    def label(self) -> str:
        return f"restored data directory {self.data} on port {self.port}"


def scratch_root(settings: Settings, drill_id: str) -> Path:
    """The throw-away directory of a drill's physical restore: the bases its deep verify
    extracted (``prepared_part``), then the data directory recovered from them."""
    return (Path(settings.state_dir) / "drills" / f"{drill_id}-physical").resolve()


def restore(settings: Settings, drill_id: str, manifest: Manifest,
            target: RecoveryTarget) -> tuple[PhysicalScratch, RestoreReport]:
    """Restore, recover and start the chain in the scratch directory, taking each base the
    verify stage left extracted there (the others fetched again); removed on failure."""
    root = scratch_root(settings, drill_id)
    write_owner(root)   # weekly disk cleanup removes it once this process is gone
    bin_dir = matching_bin_dir(manifest.server_version_num // 10000, settings.pg_bin_dir) or embedded_bin_dir()
    data = root / "data"
    try:
        report = restore_physical(settings, manifest.backup_id, data, target=target, start=True, verify=True,
                                  recovery_timeout=settings.rto_objective_seconds * 4, prepared=root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return PhysicalScratch(str(root), str(data), str(bin_dir), report.port or 0), report
