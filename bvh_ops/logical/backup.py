"""The logical (pg_dump) backup: one snapshot for the dump and the fingerprints, streamed into
the repository, committed by its manifest. No Prefect here; flows/daily_backup.py wraps it."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict

from bvh_ops import __version__
from bvh_ops.config import Settings
from bvh_ops.errors import DatabaseError
from bvh_ops.keys import load_recipients
from bvh_ops.pg.catalog import schema_snapshot
from bvh_ops.pg.conn import connect, translate
from bvh_ops.pg.fingerprint import TableRef, fingerprint_database, list_tables, table_bytes
from bvh_ops.pg.lock import TargetLock
from bvh_ops.pg.tools import StderrTail, matching_bin_dir, pg_env, raise_for_tool, spawn_tool
from bvh_ops.repository.manifest import BackupResult, Manifest, TableStat
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import new_backup_id, stats_to_entry
from bvh_ops.stream import ReadAhead, seal_data_key

log = logging.getLogger("bvh_ops.logical.backup")

DUMP_OBJECT = "dump.pgcustom"
READ_CHUNK = 1 << 20

Progress = Callable[[int], None]


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


def run_logical_backup(settings: Settings, *, progress: Progress | None = None,
                       backup_id: str | None = None, fingerprints: bool = True,
                       klass: str | None = None) -> BackupResult:
    """Snapshot, fingerprint and dump the target into a new committed backup. ``klass`` (e.g.
    monthly-archive) is recorded in the manifest as ``extra["class"]``.

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
        fp_thread: threading.Thread | None = None
        try:
            # One snapshot for everything: the dump and the fingerprints read the same rows.
            snapshot, version, version_num, sysid, tables, schema, sizes = _snapshot_facts(conn)
            # Fingerprints in that snapshot, on this connection, while pg_dump streams.
            fp_result: dict[str, object] = {}

            def _fingerprints() -> None:
                try:
                    fp_result["stats"] = fingerprint_database(conn, tables) if fingerprints else []
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                    fp_result["error"] = exc

            fp_thread = threading.Thread(target=_fingerprints, name="bvh-fingerprints", daemon=True)
            fp_thread.start()
            # pg_dump of that snapshot → zstd → AES-256-GCM → the repository, never a local copy.
            key_ids = tuple(r.key_id for r in recipients)
            writer = repo.begin(backup_id)
            dump_bin = matching_bin_dir(version_num // 10000, settings.pg_bin_dir)
            dump = spawn_tool("pg_dump", ["--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-sync",
                                          "-d", dbname], env=pg_env(dsn, dbname=dbname), bin_dir=dump_bin)
            dump_stats = _stream_dump(dump, writer, recipients, settings, progress)
            fp_thread.join()
            if "error" in fp_result:
                raise fp_result["error"]  # type: ignore[misc]
            stats: list[TableStat] = fp_result["stats"]  # type: ignore[assignment]
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
                       "pg_dump": str(dump_bin or "embedded"), "schema": schema},
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
            if fp_thread is not None and fp_thread.is_alive():
                try:
                    conn.cancel_safe()
                except psycopg.Error:
                    pass
                fp_thread.join(timeout=30)
            try:
                conn.rollback()
                conn.close()
            except psycopg.Error:
                pass
            if dump is not None and dump.stdout:
                dump.stdout.close()


def _snapshot_facts(conn: psycopg.Connection):
    """Export the snapshot and read, in it, what the manifest records besides the dump: server
    facts, the tables (refusing ones the role cannot read), the schema and the table sizes."""
    try:
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        version, version_num, sysid = _server_info(conn)
        tables = list_tables(conn)
        _check_privileges(conn, tables)
        return snapshot, version, version_num, sysid, tables, schema_snapshot(conn), table_bytes(conn, tables)
    except psycopg.Error as exc:
        raise translate(exc, "taking the snapshot") from None


def _stream_dump(dump, writer, recipients, settings: Settings, progress: Progress | None):
    """pg_dump's stdout into the backup's encrypted object (read ahead on a thread so pg_dump
    never waits on a full pipe); its exit code checked; returns the object's stream stats."""
    data_key = os.urandom(32)
    err_tail = StderrTail(dump.stderr)
    err_tail.start()
    with writer.object(DUMP_OBJECT, data_key=data_key, envelopes=seal_data_key(data_key, recipients),
                       compression_level=settings.compression_level,
                       segment_size=settings.segment_size_kib << 10,
                       compression_threads=settings.compression_threads) as out:
        total = 0
        ahead = ReadAhead(dump.stdout, chunk=READ_CHUNK)
        try:
            for chunk in ahead:
                out.write(chunk)
                total += len(chunk)
                if progress:
                    progress(total)
        finally:
            ahead.close()
        rc = dump.wait()
        if rc != 0:
            raise_for_tool("pg_dump", rc, err_tail.text())
    return out.stats


def delete_committed(settings: Settings, backup_id: str) -> None:
    """Rollback hook: remove a backup that was committed but whose checks then failed."""
    repo, _ = open_repository(settings, check=False)
    repo.delete_backup(backup_id)


__all__ = ["BackupResult", "TargetLock", "run_logical_backup", "open_repository", "delete_committed", "DUMP_OBJECT"]
