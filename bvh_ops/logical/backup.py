"""The logical (pg_dump) backup: pg_dump of an exported snapshot streamed into the repository,
every table fingerprinted from the COPY text passing through (the server reads each table once),
committed by its manifest. No Prefect here; flows/daily_backup.py wraps it."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from datetime import UTC, datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bvh_ops import __version__, progress
from bvh_ops.config import Settings
from bvh_ops.errors import DatabaseError
from bvh_ops.keys import load_recipients
from bvh_ops.logical.archive import DumpFingerprinter
from bvh_ops.pg.catalog import schema_snapshot
from bvh_ops.pg.conn import connect, translate
from bvh_ops.pg.fingerprint import (
    BLAKE3,
    DUMP_OPTIONS,
    LARGE_OBJECTS,
    Partition,
    TableRef,
    copy_hash,
    copy_stat,
    data_leaves,
    list_tables,
    partitions,
    table_bytes,
)
from bvh_ops.pg.lock import TargetLock
from bvh_ops.pg.tools import StderrTail, matching_bin_dir, pg_env, raise_for_tool, spawn_tool
from bvh_ops.repository.manifest import BackupResult, Manifest, TableStat
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import new_backup_id, stats_to_entry
from bvh_ops.stream import ReadAhead, seal_data_key

log = logging.getLogger("bvh_ops.logical.backup")

DUMP_OBJECT = "dump.pgcustom"
READ_CHUNK = 1 << 20
# Fingerprint definition the manifest records (docs/FORMAT.md): 2 = sha256 of each table's COPY
# text taken from the dump stream; absent = 1, SQL row hashes in a second read.
FINGERPRINTS_VERSION = 4

# Heap and TOAST of the user tables and large objects: roughly what pg_dump will write.
DATA_BYTES = """
SELECT coalesce(sum(pg_table_size(c.oid)), 0) + pg_table_size('pg_largeobject')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
"""


def _server_info(conn: psycopg.Connection) -> tuple[str, int, str]:
    version, num = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int").fetchone()
    try:
        with conn.transaction():
            sysid = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
    except psycopg.Error:
        sysid = "unknown (needs pg_monitor or superuser)"
    return version, num, sysid


def _check_privileges(conn: psycopg.Connection, tables: list[TableRef]) -> None:
    rows = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE format('%%I.%%I', n.nspname, c.relname) = ANY(%s) AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
        ([t.name for t in tables],),
    ).fetchall()
    if rows:
        names = ", ".join(r[0] for r in rows)
        raise DatabaseError(f"permission denied on table {names}: grant the backup role SELECT on it (or pg_read_all_data)")


def run_logical_backup(settings: Settings, *, backup_id: str | None = None, fingerprints: bool = True,
                       klass: str | None = None) -> BackupResult:
    """Snapshot, dump and fingerprint the target into a new committed backup. ``klass`` (e.g.
    monthly-archive) is recorded in the manifest as ``extra["class"]``.

    Progress goes to bvh_ops.progress as "dump" (bytes of the tables' size on disk, an estimate).
    ``fingerprints=False`` exists for the benchmark's cost breakdown only: such a backup has no
    table stats, so its checks and every restore comparison fail by design.
    """
    dsn = settings.require_database_url()
    recipients = load_recipients(settings.require_recipients())
    repo, host_key = open_repository(settings)
    dbname = conninfo_to_dict(dsn).get("dbname") or conninfo_to_dict(dsn).get("user") or "postgres"
    started = datetime.now(UTC)
    t0 = time.monotonic()
    backup_id = backup_id or new_backup_id("logical", started)

    with TargetLock(dsn, "daily-backup"):
        conn = connect(dsn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        writer = None
        dump = None
        try:
            # One snapshot: pg_dump reads it; the catalog facts below come from it too.
            snapshot, version, version_num, sysid, tables, schema, sizes, leaves, parts, estimate = \
                _snapshot_facts(conn)
            # pg_dump of that snapshot → zstd → AES-256-GCM → the repository, never a local copy;
            # each table's fingerprint is taken from its COPY text on the way.
            key_ids = tuple(r.key_id for r in recipients)
            writer = repo.begin(backup_id)
            dump_bin = matching_bin_dir(version_num // 10000, settings.pg_bin_dir)
            env = pg_env(dsn, dbname=dbname)
            env["PGOPTIONS"] = DUMP_OPTIONS  # what pg_dump leaves to server defaults, fixed (fingerprint.py)
            dump = spawn_tool("pg_dump", ["--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-sync",
                                          "-d", dbname], env=env, bin_dir=dump_bin)
            fp = DumpFingerprinter() if fingerprints else None
            dump_stats = _stream_dump(dump, writer, recipients, settings, estimate, fp)
            stats = _table_stats(tables, leaves, fp) if fp is not None else []
            part_stats = _partition_stats(parts, fp) if fp is not None else {}
            finished = datetime.now(UTC)
            manifest = Manifest(
                backup_id=backup_id,
                kind="logical",
                tool_version=__version__,
                started_at=started.isoformat(),
                finished_at=finished.isoformat(),
                database=dbname,
                server_version=version,
                server_version_num=version_num,
                system_identifier=sysid,
                snapshot_id=snapshot,
                dump_format="custom",
                compression=f"zstd-{settings.compression_level}",
                kem=recipients[0].kem,
                key_ids=key_ids,
                host=socket.gethostname(),
                objects=(stats_to_entry(DUMP_OBJECT, dump_stats, key_ids, f"zstd-{settings.compression_level}"),),
                tables=tuple(stats),
                extra={**({"class": klass} if klass else {}),
                       "tables_in_snapshot": [t.name for t in tables], "table_bytes": sizes,
                       "pg_dump": str(dump_bin or "embedded"), "schema": schema,
                       "fingerprints": FINGERPRINTS_VERSION,
                       "dump_encoding": fp.encoding if fp is not None else None,
                       **({"partitions": part_stats} if part_stats else {})},
            )
            writer.commit(manifest, host_key)
            log.info("backup %s committed: %d bytes in, %d stored", backup_id, manifest.bytes_in, manifest.bytes_stored)
            return BackupResult(manifest, time.monotonic() - t0, repo.store.url)
        except BaseException:
            if dump is not None and dump.poll() is None:
                dump.kill()
                dump.wait()
            if writer is not None:
                try:
                    writer.abort()
                except Exception:  # noqa: BLE001 - leftovers are collected by a later run
                    log.warning("could not remove the partial backup %s; a later run will", backup_id)
            raise
        finally:
            try:
                conn.rollback()
                conn.close()
            except psycopg.Error:
                pass
            if dump is not None and dump.stdout:
                dump.stdout.close()


def _table_stats(tables: list[TableRef], leaves: dict[str, list[tuple[str, str, str]]],
                 fp: DumpFingerprinter) -> list[TableStat]:
    """Each listed table's rows and fingerprint from its leaves' COPY digests; a table with no
    data entry in the dump is empty (the digest of nothing), which a restored copy must match."""
    stats = []
    for t in tables:
        parts = []
        for schema, relname, leaf in leaves[t.name]:
            d = fp.tables.get((schema, relname))
            parts.append((leaf, d.rows, d.hexdigest()) if d is not None else (leaf, 0, _EMPTY))
        stats.append(copy_stat(t, parts, BLAKE3))
    lo = fp.large_objects
    stats.append(TableStat(LARGE_OBJECTS, lo.count, f"{lo.count}:{lo.total}:lo", "large_objects"))
    return stats


def _partition_stats(parts: list[Partition], fp: DumpFingerprinter) -> dict[str, dict[str, str]]:
    """Each partition's parent and fingerprint, taken as a listed table's is (a partitioned
    partition: its leaves' digests combined), so that one restored alone can be compared."""
    out = {}
    for part in parts:
        leaves = []
        for schema, relname, leaf in part.leaves:
            d = fp.tables.get((schema, relname))
            leaves.append((leaf, d.rows, d.hexdigest()) if d is not None else (leaf, 0, _EMPTY))
        stat = copy_stat(part.ref, leaves, BLAKE3)
        out[part.ref.name] = {"parent": part.parent, "kind": part.ref.kind, "fingerprint": stat.fingerprint}
    return out


_EMPTY = copy_hash(BLAKE3).hexdigest()


def _snapshot_facts(conn: psycopg.Connection):
    """Export the snapshot and read, in it, what the manifest records besides the dump: server
    facts, the tables (refusing ones the role cannot read), the schema, the table sizes and
    which tables hold each listed table's rows (itself, or its leaf partitions), and the data's
    size on disk (the progress display's estimate of the dump's size)."""
    try:
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        version, version_num, sysid = _server_info(conn)
        tables = list_tables(conn)
        _check_privileges(conn, tables)
        estimate = conn.execute(DATA_BYTES).fetchone()[0]
        return (snapshot, version, version_num, sysid, tables, schema_snapshot(conn), table_bytes(conn, tables),
                data_leaves(conn, tables), partitions(conn, tables), int(estimate))
    except psycopg.Error as exc:
        raise translate(exc, "taking the snapshot") from None


def _stream_dump(dump, writer, recipients, settings: Settings, estimate: int | None, fp: DumpFingerprinter | None):
    """pg_dump's stdout into the backup's encrypted object (read ahead on a thread so pg_dump
    never waits on a full pipe), each chunk also through the fingerprinter on its own thread
    (numpy and the hash release the GIL: it runs beside compression); pg_dump's exit code checked;
    returns the object's stream stats."""
    data_key = os.urandom(32)
    err_tail = StderrTail(dump.stderr)
    err_tail.start()
    hasher = _FingerprintThread(fp) if fp is not None else None
    try:
        with writer.object(DUMP_OBJECT, data_key=data_key, envelopes=seal_data_key(data_key, recipients),
                           compression_level=settings.compression_level,
                           segment_size=settings.segment_size_kib << 10,
                           compression_threads=settings.compression_threads) as out:
            total = 0
            ahead = ReadAhead(dump.stdout, chunk=READ_CHUNK)
            try:
                for chunk in ahead:
                    if hasher is not None:
                        hasher.put(chunk)
                    out.write(chunk)
                    total += len(chunk)
                    progress.report("dump", total, estimate)
            finally:
                ahead.close()
            rc = dump.wait()
            if rc != 0:
                raise_for_tool("pg_dump", rc, err_tail.text())
            progress.report("dump", total, total)  # the size is known now: the estimate is done with
            if hasher is not None:
                hasher.finish()
    finally:
        if hasher is not None:
            hasher.stop()
    return out.stats


class _FingerprintThread:
    """Feeds chunks to a DumpFingerprinter on a thread, at most ``depth`` chunks behind."""

    def __init__(self, fp: DumpFingerprinter, depth: int = 8) -> None:
        self.fp = fp
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._skip = False
        self._thread = threading.Thread(target=self._run, name="bvh-fingerprints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._q.get()) is not None:
            if self._error is None and not self._skip:
                try:
                    self.fp.feed(chunk)
                except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
                    self._error = exc

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(chunk)

    def finish(self) -> None:
        """Wait for the last chunk; raise what feeding raised; the stream must be whole."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self.fp.finish()

    def stop(self) -> None:
        """After a failure: skip what is queued and end the thread."""
        if self._thread.is_alive():
            self._skip = True
            self._q.put(None)
            self._thread.join()


def delete_committed(settings: Settings, backup_id: str) -> None:
    """Rollback hook: remove a backup that was committed but whose checks then failed."""
    repo, _ = open_repository(settings, check=False)
    repo.delete_backup(backup_id)


__all__ = ["BackupResult", "TargetLock", "run_logical_backup", "open_repository", "delete_committed", "DUMP_OBJECT"]
