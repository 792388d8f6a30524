"""The hot store (``ops.log_records``, partitioned by category then day) and the collector's
bookkeeping (``ops.log_offsets``, ``ops.log_quarantine``). Records go in with COPY, their day
partitions ensured first; reads stream through a server-side cursor.

``iter_records`` is the one way other parts (analysis, archive) read stored records."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from bvh_ops.logs.offsets import Stored
from bvh_ops.logs.record import CATEGORIES, LEVELS, Record

COPY_SQL = ("COPY ops.log_records (at, category, source, level, event, message, fields, file_id, file_offset) "
            "FROM STDIN")
PARTITIONS_AHEAD = 1    # today's and tomorrow's partitions of every category exist before a collect


def ensure_partitions(conn: psycopg.Connection, days: Iterable[tuple[str, date]]) -> None:
    """Create the (category, day) partitions missing (ops.ensure_log_partition is idempotent)."""
    for category, day in sorted(set(days)):
        conn.execute("SELECT ops.ensure_log_partition(%s, %s)", (category, day))


def ensure_ahead(conn: psycopg.Connection, now: datetime, days_ahead: int = PARTITIONS_AHEAD) -> None:
    """Today's (and the next days') partitions of every category, in their own short
    transaction: a routine collect then never creates one inside its data transaction, where
    the lock on the category's table would be held until commit."""
    today = now.astimezone(UTC).date()
    with conn.transaction():
        ensure_partitions(conn, [(c, today + timedelta(days=i)) for c in CATEGORIES for i in range(days_ahead + 1)])


def copy_records(conn: psycopg.Connection, records: Sequence[Record], known: set[tuple[str, date]]) -> int:
    """COPY ``records`` in (inside the caller's transaction), creating the day partitions not in
    ``known`` first (and adding them to it)."""
    if not records:
        return 0
    new = {(r.category, r.at.astimezone(UTC).date()) for r in records} - known
    if new:
        ensure_partitions(conn, new)
        known |= new
    with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
        for r in records:
            copy.write_row((r.at, r.category, r.source, r.level, r.event, r.message,
                            json.dumps(r.fields, default=str, ensure_ascii=False), r.file_id, r.file_offset))
    return len(records)


def existing_partitions(conn: psycopg.Connection) -> set[tuple[str, date]]:
    rows = conn.execute(
        "SELECT p.relname, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
        "WHERE n.nspname = 'ops' AND p.relname = ANY(%s)", ([f"log_{c}" for c in CATEGORIES],)).fetchall()
    found = set()
    for parent, child in rows:
        suffix = child.removeprefix(parent + "_")
        if len(suffix) == 8 and suffix.isdigit():
            found.add((parent.removeprefix("log_"), date(int(suffix[:4]), int(suffix[4:6]), int(suffix[6:]))))
    return found


def quarantine(conn: psycopg.Connection, rows: Sequence[tuple[str, str, int, str, str]], now: datetime) -> None:
    """Keep malformed lines: (source, path, offset, line, error) each."""
    if not rows:
        return
    with conn.cursor() as cur, cur.copy("COPY ops.log_quarantine (source, path, file_offset, line, error, at) "
                                        "FROM STDIN") as copy:
        for source, path, offset, line, error in rows:
            copy.write_row((source, path, offset, line.replace("\x00", ""), error, now))


def load_offsets(conn: psycopg.Connection, source: str) -> dict[str, Stored]:
    rows = conn.execute("SELECT file_id, path, file_offset, head_sha256 FROM ops.log_offsets WHERE source = %s",
                        (source,)).fetchall()
    return {r[0]: Stored(r[0], r[1], r[2], r[3]) for r in rows}


def save_offset(conn: psycopg.Connection, source: str, file_id: str, path: str, offset: int, head: str,
                now: datetime) -> None:
    conn.execute(
        "INSERT INTO ops.log_offsets (source, file_id, path, file_offset, head_sha256, updated_at) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source, file_id) DO UPDATE SET path = EXCLUDED.path, "
        "file_offset = EXCLUDED.file_offset, head_sha256 = EXCLUDED.head_sha256, updated_at = EXCLUDED.updated_at",
        (source, file_id, path, offset, head, now))


def forget_offsets(conn: psycopg.Connection, source: str, file_ids: Sequence[str]) -> None:
    """Rows of files that no longer exist (rotated away and deleted)."""
    if file_ids:
        conn.execute("DELETE FROM ops.log_offsets WHERE source = %s AND file_id = ANY(%s)", (source, list(file_ids)))


# -- reading ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    """A search of the hot store; every part optional. ``level`` is a minimum (warning: warning
    and error); ``match`` compares a field (top-level key of ``fields``, or event/source/message)
    for equality; ``grep`` is a case-insensitive substring of the message or any field value."""

    category: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    level: str | None = None
    match: Mapping[str, str] | None = None
    grep: str | None = None
    limit: int | None = None


_COLUMNS = ("event", "source", "message", "level", "category")


def _where(q: Query) -> tuple[sql.Composable, list[object]]:
    parts: list[sql.Composable] = []
    params: list[object] = []
    if q.category:
        parts.append(sql.SQL("category = %s"))
        params.append(q.category)
    if q.since:
        parts.append(sql.SQL("at >= %s"))
        params.append(q.since)
    if q.until:
        parts.append(sql.SQL("at < %s"))
        params.append(q.until)
    if q.level:
        parts.append(sql.SQL("level = ANY(%s)"))
        params.append(list(LEVELS[LEVELS.index(q.level):]))
    for key, value in (q.match or {}).items():
        if key in _COLUMNS:
            parts.append(sql.SQL("{} = %s").format(sql.Identifier(key)))
        else:
            parts.append(sql.SQL("fields ->> %s = %s"))
            params.append(key)
        params.append(value)
    if q.grep:
        pattern = "%" + q.grep.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        parts.append(sql.SQL("(message ILIKE %s OR fields::text ILIKE %s OR event ILIKE %s)"))
        params += [pattern, pattern, pattern]
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")), params


def iter_records(conn: psycopg.Connection, query: Query = Query(), *, batch: int = 2000) -> Iterator[Record]:
    """Stored records matching ``query``, oldest first, streamed through a server-side cursor
    (``batch`` rows at a time; never the whole result in memory). ``conn`` must not be in
    autocommit mode for a named cursor to outlive one statement: a transaction is opened here."""
    where, params = _where(query)
    stmt = sql.SQL("SELECT at, category, source, level, event, message, fields, file_id, file_offset "
                   "FROM ops.log_records WHERE {} ORDER BY at, file_id, file_offset").format(where)
    if query.limit:
        stmt = stmt + sql.SQL(" LIMIT %s")
        params.append(query.limit)
    with conn.transaction(), conn.cursor(name="bvh_logs_search") as cur:
        cur.itersize = batch
        cur.execute(stmt, params)
        for row in cur:
            yield Record(at=row[0], category=row[1], source=row[2], level=row[3], event=row[4], message=row[5],
                         fields=row[6], file_id=row[7], file_offset=row[8])
