"""Per-table row counts and order-independent fingerprints, pushed down to SQL.

fingerprint(T) = "<rows>:<sum of 64-bit row hashes>:rec" where a row's hash is
hash_record_extended(row, 0) (PostgreSQL 14+: the types' own hash functions, about twice as fast
as hashing the row's text), or "<rows>:<sum>" with hashtextextended(row::text, 0) for tables with
a column type that has no hash function (and servers before 14). Summing (not XOR-ing) the row
hashes makes the result independent of row order yet sensitive to duplicate rows (two equal rows
add twice). Row text depends on session settings, which ``conn.SESSION_SETTINGS`` fixes. A
restored copy is fingerprinted with the method its backup recorded. Nothing but two numbers per
table leaves the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from bvh_ops.pg.conn import translate
from bvh_ops.repository.manifest import TableStat

LARGE_OBJECTS = "pg_largeobject"

LIST_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, n.nspname, c.relname, c.relkind,
  -- Record hashing is safe only over plain base types: enums hash their OID, which differs
  -- after a restore (so do composites and ranges over them).
  NOT EXISTS (
    SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
    LEFT JOIN pg_type et ON et.oid = coalesce(nullif(t.typelem, 0), nullif(bt.typelem, 0))
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      AND (t.typtype NOT IN ('b', 'd') OR coalesce(bt.typtype, 'b') <> 'b' OR coalesce(et.typtype, 'b') <> 'b')
  ) AS record_safe
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')  -- not materialized views: a restore refreshes them from restored data
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""

_KINDS = {"r": "table", "p": "partitioned"}


@dataclass(frozen=True)
class TableRef:
    name: str
    schema: str
    relname: str
    kind: str
    record_safe: bool = False


def list_tables(conn: psycopg.Connection) -> list[TableRef]:
    rows = conn.execute(LIST_TABLES).fetchall()
    return [TableRef(name, nsp, rel, _KINDS[kind], bool(safe)) for name, nsp, rel, kind, safe in rows]


# pg_partition_tree() lists nothing for a plain table (PostgreSQL 18), so only a partitioned
# table is summed over its tree; a plain table is its own heap + TOAST + indexes.
TABLE_BYTES = """
SELECT format('%%I.%%I', n.nspname, c.relname),
  CASE WHEN c.relkind = 'p'
       THEN (SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p)
       ELSE pg_total_relation_size(c.oid) END::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE format('%%I.%%I', n.nspname, c.relname) = ANY(%s)
"""


def table_bytes(conn: psycopg.Connection, tables: list[TableRef]) -> dict[str, int]:
    """Bytes on disk per table (a partitioned table: all its partitions), for the tables
    artifact and the parallel restore's job weighting."""
    sizes = dict(conn.execute(TABLE_BYTES, ([t.name for t in tables],)).fetchall())
    return {t.name: int(sizes.get(t.name, 0)) for t in tables}


RECORD = "rec"
TEXT = "text"
_EXPR = {RECORD: "hash_record_extended(t, 0)", TEXT: "hashtextextended(t::text, 0)"}


def method_of(fingerprint: str) -> str:
    return RECORD if fingerprint.endswith(":rec") else TEXT


def table_fingerprint(conn: psycopg.Connection, table: TableRef, method: str | None = None) -> TableStat:
    """Fingerprint one table; ``method`` None = record hash where the server and types allow."""
    ident = sql.Identifier(table.schema, table.relname)
    # ONLY: a plain table's own rows (inheritance children are tables of their own);
    # a partitioned table is read whole (its partitions are not listed separately).
    only = sql.SQL("") if table.kind == "partitioned" else sql.SQL("ONLY ")
    if method:
        methods = [method]
    elif table.record_safe and conn.info.server_version >= 140000:
        methods = [RECORD, TEXT]
    else:
        methods = [TEXT]
    for i, m in enumerate(methods):
        query = sql.SQL("SELECT count(*), coalesce(sum({expr}), 0)::text FROM {only}{ident} AS t").format(
            expr=sql.SQL(_EXPR[m]), only=only, ident=ident)
        try:
            with conn.transaction():  # a savepoint: a type without a hash function must not abort the snapshot
                rows, total = conn.execute(query).fetchone()
            suffix = ":rec" if m == RECORD else ""
            return TableStat(table.name, int(rows), f"{rows}:{total}{suffix}", table.kind)
        except psycopg.errors.UndefinedFunction:
            if i == len(methods) - 1:
                raise translate_missing(table) from None
        except psycopg.Error as exc:
            raise translate(exc, f"table {table.name}") from None
    raise AssertionError("unreachable")


def translate_missing(table: TableRef) -> Exception:
    from bvh_ops.errors import DatabaseError

    return DatabaseError(f"table {table.name}: no hash function for one of its column types")


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


def fingerprint_database(conn: psycopg.Connection, tables: list[TableRef] | None = None,
                         methods: dict[str, str] | None = None) -> list[TableStat]:
    """Fingerprints of every user table (and large objects) as the connection's snapshot sees
    them; ``methods`` (table -> method) reproduces the methods a backup recorded."""
    tables = list_tables(conn) if tables is None else tables
    methods = methods or {}
    stats = [table_fingerprint(conn, t, methods.get(t.name)) for t in tables]
    stats.append(large_object_fingerprint(conn))
    return stats
