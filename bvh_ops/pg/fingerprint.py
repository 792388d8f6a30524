"""Per-table row counts and order-independent fingerprints, pushed down to SQL.

fingerprint(T) = "<rows>:<sum over rows of hashtextextended(row::text, 0)>". Summing (not
XOR-ing) 64-bit row hashes makes the result independent of row order yet sensitive to duplicate
rows (two equal rows add twice). The row text depends on session settings, which
``conn.SESSION_SETTINGS`` fixes, so a source and a restored copy on another server compare.
Nothing but two numbers per table leaves the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from bvh_ops.pg.conn import translate
from bvh_ops.repository.manifest import TableStat

LARGE_OBJECTS = "pg_largeobject"

LIST_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm')
  AND NOT c.relispartition
  AND (c.relkind <> 'm' OR c.relispopulated)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""

_KINDS = {"r": "table", "p": "partitioned", "m": "matview"}


@dataclass(frozen=True)
class TableRef:
    name: str
    schema: str
    relname: str
    kind: str


def list_tables(conn: psycopg.Connection) -> list[TableRef]:
    rows = conn.execute(LIST_TABLES).fetchall()
    return [TableRef(name, nsp, rel, _KINDS[kind]) for name, nsp, rel, kind in rows]


def table_fingerprint(conn: psycopg.Connection, table: TableRef) -> TableStat:
    ident = sql.Identifier(table.schema, table.relname)
    # ONLY: a plain table's own rows (inheritance children are tables of their own);
    # a partitioned table is read whole (its partitions are not listed separately).
    only = sql.SQL("") if table.kind == "partitioned" else sql.SQL("ONLY ")
    query = sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {only}{ident} AS t"
    ).format(only=only, ident=ident)
    try:
        rows, total = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, f"table {table.name}") from None
    return TableStat(table.name, int(rows), f"{rows}:{total}", table.kind)


def large_object_fingerprint(conn: psycopg.Connection) -> TableStat:
    query = (
        "SELECT count(*), coalesce(sum(hashtextextended(m.oid::text || ':' || md5(lo_get(m.oid)), 0)), 0)::text "
        "FROM pg_largeobject_metadata m"
    )
    try:
        rows, total = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, "large objects") from None
    return TableStat(LARGE_OBJECTS, int(rows), f"{rows}:{total}", "large_objects")


def fingerprint_database(conn: psycopg.Connection, tables: list[TableRef] | None = None) -> list[TableStat]:
    """Fingerprints of every user table (and large objects) as the connection's snapshot sees them."""
    tables = list_tables(conn) if tables is None else tables
    stats = [table_fingerprint(conn, t) for t in tables]
    stats.append(large_object_fingerprint(conn))
    return stats
