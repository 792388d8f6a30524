"""Physical full backups: `pg_basebackup -D - -Ft -X fetch` streamed as one tar (with the WAL
needed for consistency and PostgreSQL's own backup_manifest inside) through the same
zstd → AES-GCM → repository pipeline, committed by a signed manifest; and the restore that
extracts that stream into a data directory which starts by itself. Incrementals, WAL-based
point-in-time recovery and chains come next (issue #3)."""

from __future__ import annotations

import os
import re
import socket
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bvh_ops import __version__
from bvh_ops.backup import BackupResult, TargetLock, _StderrTail, open_repository
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, IntegrityError, NotFound
from bvh_ops.keys import load_identities, load_recipients
from bvh_ops.pg.conn import connect
from bvh_ops.pg.tools import matching_bin_dir, pg_env, raise_for_tool, spawn_tool
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.repo import backup_prefix, new_backup_id, stats_to_entry
from bvh_ops.stream import DecryptingReader, HashingReader, seal_data_key

BASE_OBJECT = "base.tar"
READ_CHUNK = 1 << 20
_LSN = re.compile(r"write-ahead log (start|end) point: ([0-9A-F]+/[0-9A-F]+)(?: on timeline (\d+))?")


def run_physical_full(settings: Settings) -> BackupResult:
    """A full physical backup of the target's cluster, streamed (never a local copy)."""
    dsn = settings.require_database_url()
    recipients = load_recipients(settings.require_recipients())
    repo, host_key = open_repository(settings)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    backup_id = new_backup_id("full", started)
    with connect(dsn, autocommit=True) as conn:
        version, num = conn.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int").fetchone()
        try:
            sysid = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
        except Exception:  # noqa: BLE001 - needs pg_monitor; informative only
            sysid = "unknown"
    with TargetLock(dsn, "physical-backup"):
        writer = repo.begin(backup_id)
        proc = None
        try:
            data_key = os.urandom(32)
            args = ["-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast", "-v", "--no-sync"]
            proc = spawn_tool("pg_basebackup", args, env=pg_env(dsn),
                              bin_dir=matching_bin_dir(num // 10000, settings.pg_bin_dir))
            err = _StderrTail(proc.stderr)
            err.start()
            with writer.object(BASE_OBJECT, data_key=data_key, envelopes=seal_data_key(data_key, recipients),
                               compression_level=settings.compression_level,
                               segment_size=settings.segment_size_kib << 10,
                               compression_threads=settings.compression_threads) as out:
                while chunk := proc.stdout.read(READ_CHUNK):
                    out.write(chunk)
                rc = proc.wait()
                if rc != 0:
                    raise_for_tool("pg_basebackup", rc, err.text())
            lsns = {m.group(1): (m.group(2), m.group(3)) for m in _LSN.finditer(err.text())}
            key_ids = tuple(r.key_id for r in recipients)
            manifest = Manifest(
                backup_id=backup_id, kind="full", tool_version=__version__, started_at=started.isoformat(),
                finished_at=datetime.now(UTC).isoformat(), database="(cluster)", server_version=version,
                server_version_num=num, system_identifier=sysid, snapshot_id="", dump_format="tar",
                compression=f"zstd-{settings.compression_level}", kem=recipients[0].kem, key_ids=key_ids,
                host=socket.gethostname(),
                objects=(stats_to_entry(BASE_OBJECT, out.stats, key_ids, f"zstd-{settings.compression_level}"),),
                extra={"start_lsn": lsns.get("start", (None,))[0], "stop_lsn": lsns.get("end", (None,))[0],
                       "timeline": int(lsns.get("start", (None, "1"))[1] or 1), "tool": "pg_basebackup -Ft -X fetch"},
            )
            writer.commit(manifest, host_key)
            return BackupResult(manifest, time.monotonic() - t0, repo.store.url)
        except BaseException:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            writer.abort()
            raise


def restore_physical(settings: Settings, backup_id: str, target_dir: Path,
                     conf_overrides: dict[str, str] | None = None) -> Path:
    """Extract a full physical backup into an empty ``target_dir`` (mode 0700). The WAL it
    needs is inside, so `pg_ctl start` brings it to a consistent state by itself."""
    repo, _ = open_repository(settings, check=False)
    m = repo.trusted_manifest(backup_id)
    backup_id = m.backup_id
    if m.kind != "full":
        raise BvhOpsError(f"backup {backup_id} is a {m.kind} backup: use `bvh-ops restore … --into DSN`")
    entry = next((o for o in m.objects if o.name == BASE_OBJECT), None)
    if entry is None:
        raise NotFound(f"backup {backup_id} has no {BASE_OBJECT}")
    target = Path(target_dir).resolve()
    if target.exists() and any(target.iterdir()):
        raise BvhOpsError(f"{target} is not empty: restore into a new directory")
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    target.chmod(0o700)
    identities = load_identities(settings.require_identity())
    body = repo.store.open_reader(backup_prefix(backup_id) + BASE_OBJECT)
    try:
        hashing = HashingReader(DecryptingReader(body, identities))
        with tarfile.open(fileobj=hashing, mode="r|") as tar:
            for member in tar:
                # Never follow or create paths outside the target (tarfile's "data" filter).
                tar.extract(member, target, filter="data" if member.isreg() or member.isdir() else "tar")
        hashing.drain()
    finally:
        body.close()
    if hashing.sha.hexdigest() != entry.plaintext_sha256:
        raise IntegrityError(f"backup {backup_id}: restored tar differs from the manifest (tampered?)")
    for sub in ("pg_replslot", "pg_tblspc", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"):
        (target / sub).mkdir(exist_ok=True, mode=0o700)
    if conf_overrides:
        with open(target / "postgresql.auto.conf", "a") as fh:
            fh.write("\n# bvh-ops restore\n")
            for key, value in conf_overrides.items():
                fh.write(f"{key} = {value}\n")
    return target
