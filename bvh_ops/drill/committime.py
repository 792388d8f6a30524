"""Commit-time columns of the append-only tables, read as instants (for the PITR comparison,
freshness and RPO alike).

A `timestamptz` column is an instant. A `timestamp without time zone` column (pgbench's
history.mtime) holds a wall-clock reading; it is read in the live source's TimeZone as a new
session of the configured role gets it (postgresql.conf, ALTER DATABASE / ALTER ROLE … SET
TimeZone): the zone in which now() or CURRENT_TIMESTAMP wrote it. The same zone is used on the
source and on the restored copy (a logical restore does not bring database settings along).
The column is compared in its own terms (the bound converted, not the column), so an index on
it still serves the scans.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from bvh_ops.errors import ConfigError
from bvh_ops.pg.conn import connect


def session_time_zone(conn: psycopg.Connection) -> str:
    """The TimeZone a new session of this role in this database starts with (ours sets UTC)."""
    return conn.execute("SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'").fetchone()[0]


def source_time_zone(source_dsn: str | None, fallback_dsn: str) -> str:
    """The live source's session TimeZone; the restored copy's when there is no source to ask."""
    for dsn in (source_dsn, fallback_dsn):
        if dsn is None:
            continue
        try:
            with connect(dsn) as conn:
                return session_time_zone(conn)
        except Exception:  # noqa: BLE001 - an unreachable source: the restored copy's setting
            if dsn == fallback_dsn:
                raise
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class CommitColumn:
    table: sql.Identifier
    column: sql.Identifier
    zone: str | None  # None: timestamptz; else the zone its wall-clock values were written in

    def newest(self) -> sql.Composable:
        """max(column) as timestamptz."""
        expr = sql.SQL("max({})").format(self.column)
        return expr if self.zone is None else sql.SQL("(max({}) AT TIME ZONE {})").format(
            self.column, sql.Literal(self.zone))

    def at_or_before(self) -> sql.Composable:
        """column <= %s, the placeholder a timestamptz."""
        if self.zone is None:
            return sql.SQL("{} <= %s").format(self.column)
        return sql.SQL("{} <= (%s::timestamptz AT TIME ZONE {})").format(self.column, sql.Literal(self.zone))


def commit_column(conn: psycopg.Connection, item: str, zone: str) -> CommitColumn | None:
    """``schema.table:column`` of append_only_tables; None if the table does not exist here."""
    table, column = item.split(":")
    # The names as PostgreSQL reads the entry ('"Ünïcödé".café', quotes and all): the query
    # quotes them again.
    found = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                         "WHERE c.oid = to_regclass(%s)", (table,)).fetchone()
    if found is None:
        return None
    row = conn.execute("SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                       "AND attname = %s AND attnum > 0 AND NOT attisdropped", (table, column)).fetchone()
    if row is None:
        raise ConfigError(f"append_only_tables: {table} has no column {column}")
    ident = sql.Identifier(*found)
    if row[0] == "timestamp with time zone":
        return CommitColumn(ident, sql.Identifier(column), None)
    if row[0] == "timestamp without time zone":
        return CommitColumn(ident, sql.Identifier(column), zone)
    raise ConfigError(f"append_only_tables: {table}.{column} is {row[0]}, not a timestamp (with or without time zone)")


def newest_commit(dsn: str, append_only: list[str], zone: str, before: datetime | None = None) -> datetime | None:
    """The newest commit time (at or before ``before``, if given) in the append-only tables."""
    newest = None
    with connect(dsn) as conn:
        for item in append_only:
            col = commit_column(conn, item, zone)
            if col is None:
                continue
            where = sql.SQL("") if before is None else sql.SQL(" WHERE ") + col.at_or_before()
            q = sql.SQL("SELECT {} FROM {}").format(col.newest(), col.table) + where
            value = conn.execute(q, () if before is None else (before,)).fetchone()[0]
            if value is not None and (newest is None or value > newest):
                newest = value
    return newest
