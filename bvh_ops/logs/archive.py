"""Log archives: a day partition of ``ops.log_records`` exported to the repository (JSON Lines,
zstd, AES-GCM sealed to the recipients like every backup object), verified by reading it back,
and only then dropped from the hot store; archives past their retention deleted; legal holds.

Commit order, as for backups: the object first, then its index entry (``<key>.json``: records,
plaintext and stored sha256, sizes, key ids) — the archive exists once the index does. The
read-back reads every stored byte and checks the stored sha256 and size (no key needed); with an
identity configured it also decrypts and recounts the records against the plaintext sha256. A
partition is dropped only when its row count still equals the archived count (a late record for
an archived day is archived again, never dropped unseen). Memory is bounded: rows are streamed
from a server-side cursor, objects through the encrypting writer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

import psycopg
from psycopg import sql

from bvh_ops.audit.record import record
from bvh_ops.config import Settings
from bvh_ops.errors import IntegrityError, NotFound
from bvh_ops.keys import load_identities, load_recipients
from bvh_ops.logs.retention import Action, Archived, Hold, retain_until
from bvh_ops.storage import open_store
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import (
    DecryptingReader,
    EncryptingWriter,
    entry_envelopes,
    envelopes_json,
    seal_data_key,
)

PREFIX = "logs/"
FETCH = 5000
CHUNK = 1 << 20


def archive_key(category: str, day: date) -> str:
    return f"{PREFIX}{category}/{day:%Y/%m}/{category}-{day:%Y%m%d}.jsonl.zst.enc"


def partition(category: str, day: date) -> sql.Identifier:
    return sql.Identifier("ops", f"log_{category}_{day:%Y%m%d}")


@dataclass(frozen=True)
class ArchiveResult:
    category: str
    day: date
    key: str
    records: int
    plaintext_sha256: str
    stored_sha256: str
    stored_size: int
    locked_until: date | None


def _rows(conn: psycopg.Connection, category: str, day: date) -> Iterator[tuple[bytes, int]]:
    """The partition's records as chunks of JSON lines (and how many lines each holds), in time
    order, from a server-side cursor: one hash update and one write per chunk, not per line."""
    query = sql.SQL("SELECT json_build_object('at', at, 'category', category, 'source', source, 'level', level, "
                    "'event', event, 'message', message, 'fields', fields, 'file_id', file_id, "
                    "'file_offset', file_offset)::text FROM {} ORDER BY at, file_id, file_offset"
                    ).format(partition(category, day))
    with conn.transaction(), conn.cursor(name=f"export_{category}_{day:%Y%m%d}") as cur:
        cur.execute(query)
        while rows := cur.fetchmany(FETCH):
            yield ("\n".join(r[0] for r in rows) + "\n").encode(), len(rows)


def export_day(conn: psycopg.Connection, settings: Settings, store: ObjectStore, category: str, day: date,
               now: datetime) -> ArchiveResult:
    """Write the day's archive and its index entry; verify it by reading it back; record it in
    ``ops.log_archives``. Raises (and leaves the partition alone) on any failure."""
    key = archive_key(category, day)
    recipients = load_recipients(settings.require_recipients())
    data_key = os.urandom(32)
    envelopes = seal_data_key(data_key, recipients)
    sha, count = hashlib.sha256(), 0
    writer = store.open_writer(key)
    try:
        enc = EncryptingWriter(sink=writer, data_key=data_key, envelopes=envelopes,
                               compression_level=settings.compression_level,
                               segment_size=settings.segment_size_kib << 10, bind=key)
        for chunk, n in _rows(conn, category, day):
            sha.update(chunk)
            enc.write(chunk)
            count += n
        stats = enc.close()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    index = {"category": category, "day": day.isoformat(), "records": count, "plaintext_sha256": sha.hexdigest(),
             "plaintext_size": stats.plaintext_size, "stored_sha256": stats.stored_sha256,
             "stored_size": stats.stored_size, "key_ids": [r.key_id for r in recipients],
             "envelopes": envelopes_json(envelopes),  # format 3: rewritten by a key rotation
             "created_at": now.isoformat()}
    verify_archive(settings, store, key, index)
    store.put_bytes(key + ".json", json.dumps(index).encode())   # the commit point
    locked = _lock(store, key, category, day)
    with conn.transaction():
        conn.execute(
            """INSERT INTO ops.log_archives (category, day, object_key, records, sha256, bytes_stored, archived_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (category, day) DO UPDATE SET object_key = EXCLUDED.object_key,
                   records = EXCLUDED.records, sha256 = EXCLUDED.sha256, bytes_stored = EXCLUDED.bytes_stored,
                   archived_at = EXCLUDED.archived_at, deleted_at = NULL""",
            (category, day, key, count, sha.hexdigest(), stats.stored_size, now))
    return ArchiveResult(category, day, key, count, sha.hexdigest(), stats.stored_sha256, stats.stored_size, locked)


def _lock(store: ObjectStore, key: str, category: str, day: date) -> date | None:
    retain = getattr(store, "retain", None)
    if retain is None:
        return None
    # Audit is permanent: locked for the longest period an S3 COMPLIANCE lock allows here (100 years).
    until = retain_until(category, day) or date(day.year + 100, day.month, 1)
    for target in (key, key + ".json"):
        if not retain(target, datetime.combine(until, time(), tzinfo=UTC)):
            return None
    return until


def verify_archive(settings: Settings, store: ObjectStore, key: str, index: dict[str, Any]) -> None:
    """Read every stored byte back: stored sha256 and size; with an identity, decrypt and
    check the record count and the plaintext sha256 too. Raises IntegrityError naming the key."""
    sha, size = hashlib.sha256(), 0
    with store.open_reader(key) as body:
        while chunk := body.read(CHUNK):
            sha.update(chunk)
            size += len(chunk)
    pending = index.get("rewrite") or {}
    if (sha.hexdigest(), size) not in ((index["stored_sha256"], index["stored_size"]),
                                        (pending.get("stored_sha256"), pending.get("stored_size"))):
        raise IntegrityError(f"log archive {key}: read back {size} bytes (sha256 {sha.hexdigest()[:12]}…), "
                             f"wrote {index['stored_size']} (sha256 {index['stored_sha256'][:12]}…)")
    if settings.identity is None:
        return
    plain, count = hashlib.sha256(), 0
    identities = load_identities(settings.require_identity())
    with store.open_reader(key) as body:
        reader = DecryptingReader(body, identities, bind=key, envelopes=entry_envelopes(index))
        while chunk := reader.read(CHUNK):
            plain.update(chunk)
            count += chunk.count(b"\n")
    if count != index["records"] or plain.hexdigest() != index["plaintext_sha256"]:
        raise IntegrityError(f"log archive {key}: decrypted {count} records, archived {index['records']}, "
                             "or their sha256 differs")


def archive_envelopes(store: ObjectStore, key: str) -> list:
    """A format-3 archive's envelopes, from its index entry (none for format 2: in the header)."""
    try:
        index = json.loads(store.get_bytes(key + ".json"))
    except NotFound:
        return []
    return entry_envelopes(index)


def _decrypted_lines(settings: Settings, store: ObjectStore, key: str) -> Iterator[bytes]:
    identities = load_identities(settings.require_identity())
    envelopes = archive_envelopes(store, key)
    with store.open_reader(key) as body:
        reader = DecryptingReader(body, identities, bind=key, envelopes=envelopes)
        rest = b""
        while chunk := reader.read(CHUNK):
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if rest:
            yield rest


def drop_partition(conn: psycopg.Connection, category: str, day: date, archived_records: int, now: datetime) -> bool:
    """Drop the day's partition when its count still equals the archive's; False (nothing
    dropped) when records arrived since the archive: it is archived again next time."""
    with conn.transaction():
        name = partition(category, day)
        conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(name))
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
        if count != archived_records:
            return False
        conn.execute(sql.SQL("DROP TABLE {}").format(name))
        conn.execute("UPDATE ops.log_archives SET partition_dropped_at = %s WHERE category = %s AND day = %s",
                     (now, category, day))
    return True


def drop_unarchived(conn: psycopg.Connection, category: str, day: date) -> int:
    """A day past its whole retention that was never archived (debug's 30 days)."""
    with conn.transaction():
        name = partition(category, day)
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0]
        conn.execute(sql.SQL("DROP TABLE {}").format(name))
    return count


def delete_archive(conn: psycopg.Connection, store: ObjectStore, category: str, day: date, now: datetime) -> None:
    """Index entry first (the archive stops existing), then the object."""
    key = archive_key(category, day)
    for target in (key + ".json", key):
        try:
            store.delete(target)
        except NotFound:
            pass
    conn.execute("UPDATE ops.log_archives SET deleted_at = %s WHERE category = %s AND day = %s", (now, category, day))


def state(conn: psycopg.Connection, now: datetime) -> tuple[list[tuple[str, date]], list[Archived], list[Hold]]:
    """The planner's inputs: the day partitions, the archives, the active holds."""
    from bvh_ops.logs.retention import day_of

    names = [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = 'ops' AND p.relname LIKE 'log\\_%'")]
    partitions = [d for d in map(day_of, names) if d is not None]
    archives = [Archived(c, d, deleted is not None, dropped is not None) for c, d, deleted, dropped in conn.execute(
        "SELECT category, day, deleted_at, partition_dropped_at FROM ops.log_archives")]
    holds = [Hold(c, f, t, r) for c, f, t, r in conn.execute(
        "SELECT category, from_day, to_day, reason FROM ops.log_holds WHERE released_at IS NULL")]
    return partitions, archives, holds


def apply(conn: psycopg.Connection, settings: Settings, actions: list[Action], now: datetime) -> list[dict[str, Any]]:
    """Carry out the plan in order; an archive that fails keeps its partition (the drop that
    follows it is skipped) and the rest goes on. Returns one outcome per action."""
    store = open_store(settings)
    failed: set[tuple[str, date]] = set()
    archived: dict[tuple[str, date], int] = {
        (c, d): n for c, d, n in conn.execute("SELECT category, day, records FROM ops.log_archives "
                                              "WHERE deleted_at IS NULL")}
    out = []
    for a in actions:
        where = (a.category, a.day)
        doc: dict[str, Any] = a.to_json()
        try:
            if a.kind == "archive":
                res = export_day(conn, settings, store, a.category, a.day, now)
                archived[where] = res.records
                doc.update(records=res.records, key=res.key, bytes_stored=res.stored_size,
                           locked_until=res.locked_until.isoformat() if res.locked_until else None)
            elif a.kind == "drop_partition":
                if where in failed or where not in archived:
                    doc.update(done=False, skipped="no verified archive")
                    out.append(doc)
                    continue
                if not drop_partition(conn, a.category, a.day, archived[where], now):
                    res = export_day(conn, settings, store, a.category, a.day, now)   # late records
                    archived[where] = res.records
                    doc["rearchived"] = res.records
                    drop_partition(conn, a.category, a.day, res.records, now)
            elif a.kind == "drop_unarchived":
                doc["records"] = drop_unarchived(conn, a.category, a.day)
            elif a.kind == "delete_archive":
                delete_archive(conn, store, a.category, a.day, now)
            doc["done"] = True
            # Every archive, drop and deletion of logs is itself audited (the runbook's section 8).
            record(settings, None, f"logs.{a.kind}", f"{a.category}/{a.day.isoformat()}",
                   {k: v for k, v in doc.items() if k not in ("action", "category", "day")}, now=now, conn=conn)
        except Exception as exc:  # noqa: BLE001 - reported per action; the rest of the plan goes on
            failed.add(where)
            doc["done"] = False
            doc["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        out.append(doc)
    return out


def iter_archived(settings: Settings, conn: psycopg.Connection, since: datetime | None,
                  until: datetime | None, category: str | None = None) -> Iterator[dict[str, Any]]:
    """Records of archived days (decrypted with the identity), streamed day by day, in time order
    within a day; ``since``/``until`` bound them."""
    store = open_store(settings)
    rows = conn.execute(
        "SELECT category, day, object_key FROM ops.log_archives WHERE deleted_at IS NULL "
        "AND partition_dropped_at IS NOT NULL AND (%s::text IS NULL OR category = %s) "
        "AND (%s::date IS NULL OR day >= %s::date) AND (%s::date IS NULL OR day <= %s::date) ORDER BY day, category",
        (category, category, since, since, until, until)).fetchall()
    for _cat, _day, key in rows:
        for line in _decrypted_lines(settings, store, key):
            rec = json.loads(line)
            at = datetime.fromisoformat(rec["at"])
            if (since is None or at >= since) and (until is None or at < until):
                yield rec
