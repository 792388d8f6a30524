"""ops.audit_chain: appending (one writer at a time, by an advisory lock) and reading in seq order.

Appends run in the caller's transaction when one is open (the entry commits or rolls back with
the caller's work), else in their own. The lock is a transaction-level advisory lock, so two
writers cannot both read the same tail: seq = last + 1, prev_hash = last hash, always.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import psycopg

from bvh_ops.audit.chain import GENESIS, Entry, canonical_json, content_hash, link, normalise

# pg_advisory_xact_lock key of the chain's tail ("bvh-aud" in ASCII).
LOCK_KEY = 0x6276682D617564
COLUMNS = "seq, at, actor, action, subject, data, prev_hash, hash"
FETCH_ROWS = 5000  # rows per round trip of a streaming read


def _tail(conn: psycopg.Connection) -> tuple[int, str]:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    row = conn.execute("SELECT seq, hash FROM ops.audit_chain ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def append(conn: psycopg.Connection, actor: str, action: str, subject: str, data: Any, now: datetime) -> int:
    """Append one entry; its seq."""
    return append_many(conn, [(now, actor, action, subject, data)])[1]


def append_many(conn: psycopg.Connection, rows: Iterable[tuple[datetime, str, str, str, Any]]) -> tuple[int, int]:
    """Append ``(at, actor, action, subject, data)`` tuples in order, streamed through one COPY
    under one lock and transaction (the log collector's bulk path); ``(first seq, last seq)``,
    ``(n + 1, n)`` when ``rows`` was empty."""
    with conn.transaction():
        seq, prev = _tail(conn)
        first = seq + 1
        with conn.cursor() as cur, cur.copy(f"COPY ops.audit_chain ({COLUMNS}) FROM STDIN") as copy:
            for at, actor, action, subject, data in rows:
                seq += 1
                data = normalise(data if data is not None else {})
                h = link(prev, content_hash(seq, at, actor, action, subject or "", data))
                copy.write_row((seq, at, actor, action, subject or "", canonical_json(data), prev, h))
                prev = h
    return first, seq


def entries(conn: psycopg.Connection, *, from_seq: int = 1, to_seq: int | None = None) -> Iterator[Entry]:
    """Every entry from ``from_seq`` in seq order, through a server-side cursor (bounded memory).
    Needs a connection outside autocommit (a named cursor lives in a transaction)."""
    where, params = "seq >= %s", [from_seq]
    if to_seq is not None:
        where += " AND seq <= %s"
        params.append(to_seq)
    with conn.cursor(name="audit_entries") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(f"SELECT {COLUMNS} FROM ops.audit_chain WHERE {where} ORDER BY seq", params)
        for row in cur:
            yield Entry(*row)


def entry(conn: psycopg.Connection, seq: int) -> Entry | None:
    row = conn.execute(f"SELECT {COLUMNS} FROM ops.audit_chain WHERE seq = %s", (seq,)).fetchone()
    return Entry(*row) if row else None


def head(conn: psycopg.Connection) -> tuple[int, str, int]:
    """(seq, hash, count) of the newest entry; (0, GENESIS, 0) for an empty chain."""
    row = conn.execute("SELECT seq, hash, (SELECT count(*) FROM ops.audit_chain) FROM ops.audit_chain "
                       "ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1], row[2]) if row else (0, GENESIS, 0)


def hash_before(conn: psycopg.Connection, seq: int) -> str:
    """The stored hash of entry ``seq - 1`` (GENESIS before the first)."""
    row = conn.execute("SELECT hash FROM ops.audit_chain WHERE seq < %s ORDER BY seq DESC LIMIT 1", (seq,)).fetchone()
    return row[0] if row else GENESIS


def search(conn: psycopg.Connection, *, since: datetime | None = None, until: datetime | None = None,
           action: str | None = None, limit: int | None = None, newest: bool = False) -> list[Entry]:
    """Entries by time and action prefix, in seq order (the newest ``limit`` when ``newest``)."""
    where, params = ["true"], []
    if since is not None:
        where.append("at >= %s")
        params.append(since)
    if until is not None:
        where.append("at < %s")
        params.append(until)
    if action:
        where.append("starts_with(action, %s)")
        params.append(action)
    order = "DESC" if newest else "ASC"
    sql = f"SELECT {COLUMNS} FROM ops.audit_chain WHERE {' AND '.join(where)} ORDER BY seq {order}"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    rows = [Entry(*r) for r in conn.execute(sql, params).fetchall()]
    return sorted(rows, key=lambda e: e.seq) if newest else rows
