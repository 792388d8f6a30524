"""Schema snapshot (tables, columns and types, constraints, indexes, sequence values), taken in
the backup's snapshot and compared with a restored copy. Catalog reads only."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from bvh_ops.pg.conn import connect

_USER_NS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'")

COLUMNS = f"""
SELECT format('%I.%I', n.nspname, c.relname), a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_NS}
ORDER BY 1, a.attnum
"""
CONSTRAINTS = f"""
SELECT format('%I.%I', n.nspname, c.relname), con.conname, pg_get_constraintdef(con.oid)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_USER_NS} ORDER BY 1, 2
"""
INDEXES = f"""
SELECT format('%I.%I', n.nspname, ci.relname), pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ci.relnamespace
WHERE {_USER_NS} ORDER BY 1
"""
SEQUENCES = "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences ORDER BY 1"


def schema_snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    tables: dict[str, list[list[Any]]] = {}
    for table, col, typ, notnull in conn.execute(COLUMNS):
        tables.setdefault(table, []).append([col, typ, bool(notnull)])
    constraints = {f"{t}/{name}": d for t, name, d in conn.execute(CONSTRAINTS)}
    indexes = {name: d for name, d in conn.execute(INDEXES)}
    sequences = {name: (int(v) if v is not None else None) for name, v in conn.execute(SEQUENCES)}
    return {"tables": tables, "constraints": constraints, "indexes": indexes, "sequences": sequences}


def compare_schema(recorded: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences as readable lines; empty means equal. Sequences may only have moved forward
    (pg_dump reads them a moment after the snapshot: they are not transactional)."""
    diffs: list[str] = []
    for kind in ("tables", "constraints", "indexes"):
        want, got = recorded.get(kind, {}), actual.get(kind, {})
        for name in sorted(set(want) - set(got)):
            diffs.append(f"{kind[:-1]} {name} missing")
        for name in sorted(set(got) - set(want)):
            diffs.append(f"{kind[:-1]} {name} unexpected")
        for name in sorted(set(want) & set(got)):
            if want[name] != got[name]:
                diffs.append(f"{kind[:-1]} {name} differs: {want[name]} != {got[name]}")
    want, got = recorded.get("sequences", {}), actual.get("sequences", {})
    for name in sorted(set(want) - set(got)):
        diffs.append(f"sequence {name} missing")
    for name in sorted(set(want) & set(got)):
        if want[name] is not None and (got[name] is None or got[name] < want[name]):
            diffs.append(f"sequence {name} is {got[name]}, backup recorded {want[name]}")
    return diffs


def create_database(admin_dsn: str, dbname: str, *, drop: bool = True, encoding: str | None = None) -> None:
    """``encoding`` (another than UTF8): the database in it, with the C locale (the one every
    encoding, SQL_ASCII included, may have)."""
    with connect(admin_dsn, autocommit=True) as conn:
        if drop:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        if encoding and encoding != "UTF8":
            # LOCALE_PROVIDER (15+): a libc C locale even where the server's default is ICU;
            # before 15 there is no other provider and the clause is a syntax error.
            provider = sql.SQL("LOCALE_PROVIDER libc ") if conn.info.server_version >= 150000 else sql.SQL("")
            conn.execute(sql.SQL("CREATE DATABASE {} ENCODING {} {}LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
                                 ).format(sql.Identifier(dbname), sql.Literal(encoding), provider))
        else:
            conn.execute(f'CREATE DATABASE "{dbname}"')
