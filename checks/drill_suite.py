"""Checks of a restored copy, all pushed down to SQL (never whole tables into Python):
logical fingerprints, GX row counts over a SQL data source, schema, PITR against the live
source, domain invariants, freshness. A check that raises is not_verified, never passed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg import sql

from bvh_ops.config import redact_dsn
from bvh_ops.drill.committime import commit_column
from bvh_ops.logical.restore import compare_tables
from bvh_ops.pg.catalog import compare_schema, schema_snapshot
from bvh_ops.pg.conn import connect
from bvh_ops.repository.manifest import Manifest
from bvh_ops.results import CheckResult, CheckStatus


def guarded(name: str, fn: Callable[[], CheckResult | list[CheckResult]], secrets: list[str]) -> list[CheckResult]:
    """Run a check; an exception makes it not_verified. Secrets are scrubbed from details."""
    try:
        out = fn()
        results = out if isinstance(out, list) else [out]
    except Exception as exc:  # noqa: BLE001 - a check that could not run is reported, not passed
        results = [CheckResult(name, CheckStatus.NOT_VERIFIED, f"could not run: {exc}")]
    return [CheckResult(r.name, r.status, scrub(r.detail, secrets)) for r in results]


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return redact_dsn(text)


def check_fingerprints(dsn: str, manifest: Manifest, into: list | None = None, *,
                       known: dict | None = None, server=None) -> CheckResult:
    """Row counts and fingerprints of every table vs the backup's snapshot (pushed down to SQL).
    ``into`` receives the comparisons for the GX suite; ``known``: plain tables' COPY digests
    read early and proven unchanged since (checks.drill_early); ``server``: the scratch is on
    this host (bvh_ops.pg.fingerprint.LocalServer)."""
    comparisons = compare_tables(dsn, manifest, known=known, server=server)
    if into is not None:
        into.extend(comparisons)
    bad = [c for c in comparisons if c.differs]
    unproven = [c for c in comparisons if c.not_verified]
    if not comparisons:
        return CheckResult("logical_fingerprints", CheckStatus.NOT_VERIFIED, "the backup recorded no tables")
    if bad:
        names = ", ".join(f"{c.name} (rows {c.expected_rows} → {c.actual_rows})" for c in bad[:5])
        also = f"; {len(unproven)} more could not be verified ({unproven[0].name}: {unproven[0].not_verified})" \
            if unproven else ""
        return CheckResult("logical_fingerprints", CheckStatus.FAILED,
                           f"{len(bad)} of {len(comparisons)} tables differ from the backup's snapshot: {names}{also}")
    if unproven:
        names = ", ".join(c.name for c in unproven[:5])
        return CheckResult("logical_fingerprints", CheckStatus.NOT_VERIFIED,
                           f"{len(comparisons) - len(unproven)} of {len(comparisons)} tables equal the snapshot's; "
                           f"{len(unproven)} could not be verified: {names}: {unproven[0].not_verified}")
    early = f" ({len(known)} read while the restore ran, unchanged since)" if known else ""
    return CheckResult("logical_fingerprints", CheckStatus.PASSED,
                       f"{len(comparisons)} tables: row counts and fingerprints equal the snapshot's{early}")


def check_row_counts_gx(comparisons: list) -> CheckResult:
    """Great Expectations over the pushed-down results (one row per table, never table data):
    every table present in the restored copy with the snapshot's row count."""
    import great_expectations as gx
    import pandas as pd

    from checks.gx import validate_frame

    if not comparisons:
        return CheckResult("row_counts_gx", CheckStatus.NOT_VERIFIED, "no per-table results to validate")
    frame = pd.DataFrame(
        [{"table": c.name, "expected_rows": c.expected_rows, "actual_rows": -1 if c.actual_rows is None
          else c.actual_rows, "present": c.actual_rows is not None} for c in comparisons],
        columns=["table", "expected_rows", "actual_rows", "present"]).astype({"table": object})
    E = gx.expectations
    results = validate_frame("drill-row-counts", frame, [
        ("present", E.ExpectColumnValuesToBeInSet(column="present", value_set=[True])),
        ("row_counts", E.ExpectColumnPairValuesToBeEqual(column_A="expected_rows", column_B="actual_rows")),
    ])
    bad = [r for r in results if not r.passed]
    if bad:
        status = CheckStatus.NOT_VERIFIED if all(r.status is CheckStatus.NOT_VERIFIED for r in bad) \
            else CheckStatus.FAILED
        return CheckResult("row_counts_gx", status, "; ".join(f"{r.name}: {r.detail}" for r in bad))
    return CheckResult("row_counts_gx", CheckStatus.PASSED,
                       f"{len(comparisons)} tables present with the snapshot's row counts (GX)")


def check_schema(dsn: str, manifest: Manifest) -> CheckResult:
    recorded = manifest.extra.get("schema")
    if not recorded:
        return CheckResult("schema", CheckStatus.NOT_VERIFIED, "the backup recorded no schema")
    with connect(dsn) as conn:
        actual = schema_snapshot(conn)
    diffs = compare_schema(recorded, actual)
    if diffs:
        return CheckResult("schema", CheckStatus.FAILED, f"{len(diffs)} differences: " + "; ".join(diffs[:5]))
    n = recorded
    return CheckResult("schema", CheckStatus.PASSED,
                       f"{len(n['tables'])} tables, {len(n['constraints'])} constraints, {len(n['indexes'])} indexes, "
                       f"{len(n['sequences'])} sequences as recorded")


def _bounded_fingerprint(dsn: str, item: str, zone: str, cutoff: datetime, method: str = "text") -> tuple | None:
    with connect(dsn) as conn:
        return bounded_fingerprint(conn, item, zone, cutoff, method=method)


# How the PITR comparison hashes a row (both sides alike). "text": hashtextextended(row::text),
# any server. "record" (both servers 14+): hash_record_extended over the row's columns, each
# hashed by its type's own hash function where that equals comparing its text (integers,
# booleans, dates and times, uuid, bytea, text under a deterministic collation) and as its text
# otherwise (numeric: 1.5 = 1.50 to its hash; jsonb, floats, intervals, enums, arrays, domains
# over them…). The same rows as the text method tells apart, with ≈ half the server CPU on the
# restored copy and on the live source (twelfth #19 session: 712 → 343 ms per 630,000
# transactions). The extended hash functions are stable across major versions (hash
# partitioning keeps their values through pg_upgrade).
PITR_TEXT, PITR_RECORD = "text", "record"
_NATIVE_HASH = {"int2", "int4", "int8", "oid", "bool", "date", "time", "timestamp", "timestamptz", "uuid", "bytea",
                "char", "text", "varchar"}
ROW_COLUMNS = """
SELECT a.attname, CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN t.typname END,
       coalesce(co.collisdeterministic, true)
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


def pitr_method(*server_version_nums: int) -> str:
    return PITR_RECORD if server_version_nums and min(server_version_nums) >= 140000 else PITR_TEXT


def _method_of(value: tuple | None) -> str | None:
    if not value:
        return None
    return PITR_RECORD if str(value[1]).startswith("rec:") else PITR_TEXT


def row_hash(conn: Any, table: sql.Composable, method: str) -> sql.Composable:
    """The per-row hash expression over ``table AS t`` for ``method``."""
    if method != PITR_RECORD:
        # (t.*), not t: in a table with a column named t, "t" is that column, not the row.
        return sql.SQL("hashtextextended((t.*)::text, 0)")
    fields = []
    for name, typname, deterministic in conn.execute(ROW_COLUMNS, (table.as_string(conn),)).fetchall():
        col = sql.SQL("t.{}").format(sql.Identifier(name))
        native = typname in _NATIVE_HASH and (deterministic or typname not in ("text", "varchar"))
        fields.append(col if native else sql.SQL("textsend({}::text)").format(col))
    return sql.SQL("hash_record_extended(ROW({}), 0)").format(sql.SQL(", ").join(fields))


def bounded_fingerprint(conn: Any, item: str, zone: str, cutoff: datetime, *, whole: bool = False,
                        method: str = PITR_TEXT) -> tuple | None:
    """Rows up to the cutoff: count and sum of row hashes (``method``, PITR_TEXT or PITR_RECORD:
    the sum of the latter marked "rec:", so two methods never compare equal); ``whole``: and the
    count of all the table's rows, read in the same scan. None: no such table here."""
    col = commit_column(conn, item, zone)
    if col is None:
        return None
    h = row_hash(conn, col.table, method)
    mark = "rec:" if method == PITR_RECORD else ""
    # Rolled back (a read): the settings end with it, also inside a caller's transaction (a
    # savepoint then, whose SET LOCAL would otherwise last until the caller's commit).
    with conn.transaction(force_rollback=True):
        row_text_settings(conn)
        if whole:
            bound = col.at_or_before()
            q = sql.SQL("SELECT count(*) FILTER (WHERE {b}), coalesce(sum({h}) FILTER "
                        "(WHERE {b2}), 0)::text, count(*) FROM {tbl} AS t").format(b=bound, b2=bound, h=h,
                                                                                  tbl=col.table)
            rows, total, every = conn.execute(q, (cutoff, cutoff)).fetchone()
            return int(rows), mark + total, int(every)
        q = sql.SQL("SELECT count(*), coalesce(sum({h}), 0)::text FROM {tbl} AS t "
                    "WHERE ").format(h=h, tbl=col.table) + col.at_or_before()
        rows, total = conn.execute(q, (cutoff,)).fetchone()
        return int(rows), mark + total


# The settings a row's text depends on, as pg_dump's session has them (bvh_ops.pg.fingerprint
# COPY_SETTINGS): both sides of the PITR comparison hash a row's text (the text method; the
# record method for the types it hashes as text) under the same ones, whatever each server's
# defaults (a source whose postgresql.conf says DateStyle = 'SQL, DMY' wrote other text than
# the scratch's ISO), and the same as the dump's (bvh_ops.drill.dumpside sums the dump's rows).
# Set for the query's transaction (or savepoint) only, rolled back after it: a source behind a
# pooler keeps its sessions as they were, and so does a caller's connection.
ROW_TEXT_SETTINGS = ("TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits", "bytea_output", "lc_monetary",
                     "search_path")


def row_text_settings(conn: Any) -> None:
    from bvh_ops.pg.fingerprint import COPY_SETTINGS

    for name in ROW_TEXT_SETTINGS:
        conn.execute("SELECT set_config(%s, %s, true)", (name, COPY_SETTINGS[name]))


def _server_version(dsn: str) -> int:
    with connect(dsn) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0])


def check_pitr(dsn: str, source_dsn: str | None, append_only: list[str], cutoff: datetime,
               zone: str, *, restored_known: dict | None = None, source_known: dict | None = None,
               from_dump: dict | None = None) -> CheckResult:
    """Append-only tables hold exactly the live source's rows up to the cutoff (``zone``: where
    `timestamp without time zone` columns were written, bvh_ops.drill.committime). Each table is
    fingerprinted on both servers at once; ``restored_known``/``source_known``: entries whose
    bound was already read (checks.drill_early), item -> (rows, sum) or None (no such table);
    ``from_dump``: those of restored_known summed from the verified dump (bvh_ops.drill.dumpside),
    which the result says."""
    from concurrent.futures import ThreadPoolExecutor

    if source_dsn is None:
        return CheckResult("pitr_append_only", CheckStatus.NOT_VERIFIED, "no live source configured to compare with")
    restored_known, source_known = restored_known or {}, source_known or {}
    # Per entry, the method of what was read before (the source's early read chose it: the text
    # method where the dump summed the restored side, else the usual one), else the one both
    # servers allow.
    usual: str | None = None
    compared, rows, bad = 0, 0, []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="bvh-pitr") as pool:
        for item in append_only:
            table = item.split(":")[0]
            if item in source_known and source_known[item] is None:
                continue   # no such table on the source: nothing to compare, nothing to read
            method = _method_of(source_known.get(item)) or _method_of(restored_known.get(item))
            if method is None:
                if usual is None:
                    usual = pitr_method(_server_version(dsn), _server_version(source_dsn))
                method = usual
            restored_f = None if item in restored_known else pool.submit(_bounded_fingerprint, dsn, item, zone, cutoff,
                                                                         method)
            source = source_known[item] if item in source_known else _bounded_fingerprint(source_dsn, item, zone,
                                                                                             cutoff, method)
            restored = restored_known[item] if restored_f is None else restored_f.result()
            if source is None:
                continue
            compared += 1
            rows += int(source[0])
            if restored != source:
                bad.append(f"{table}: restored {restored[0] if restored else 'missing'} rows, source {source[0]}")
    if compared == 0:
        return CheckResult("pitr_append_only", CheckStatus.NOT_VERIFIED, "none of the append-only tables exist")
    if bad:
        return CheckResult("pitr_append_only", CheckStatus.FAILED, f"up to {cutoff.isoformat()}: " + "; ".join(bad))
    # Rows committed within pitr_margin_seconds of the target are not compared (they may have
    # been in flight): a copy of data that young has nothing to compare yet, and says so.
    what = f"{rows} rows" if rows else "no rows that old yet: nothing compared"
    dumped = sum(1 for item in append_only if item in (from_dump or {}) and from_dump[item] == restored_known.get(item))
    how = (f"; the restored side of {dumped} summed from the verified dump's rows, which logical_fingerprints "
           "proves the restored tables hold" if dumped else "")
    return CheckResult("pitr_append_only", CheckStatus.PASSED,
                       f"{compared} append-only tables equal the live source up to {cutoff.isoformat()} ({what}{how})")


# The scans the checks after a restore run at once (the fingerprints' two read-back workers, the
# PITR comparison, the invariants): on a host with no more cores than that they fill it, and a
# parallel query's workers only add their own overhead (the lottery invariants at 1.5 GB: 2.1-2.4
# core-s with two workers, 1.9 without; docs/BENCHMARKS.md).
CHECK_SCANS = 4


def parallel_checks() -> bool:
    """Whether the checks' queries may use parallel workers: only with cores to spare."""
    import os

    return (os.cpu_count() or 1) > CHECK_SCANS


def check_invariants(dsn: str, invariants: list[Any], *, parallel_workers: bool = True) -> list[CheckResult]:
    """Each configured query returns no rows. ``parallel_workers`` False: none for them
    (parallel_checks)."""
    if not invariants:
        return [CheckResult("invariants", CheckStatus.NOT_VERIFIED, "no domain invariants configured")]
    out = []
    for inv in invariants:
        def one(inv=inv) -> CheckResult:
            with connect(dsn) as conn:
                if not parallel_workers:
                    conn.execute("SET max_parallel_workers_per_gather = 0")
                q = sql.SQL("SELECT count(*) FROM ({q}) AS violations").format(q=sql.SQL(inv.sql))
                count = conn.execute(q).fetchone()[0]
                sample = _sample(conn, inv.sql) if count else []
            name = f"invariant:{inv.name}"
            if count:
                return CheckResult(name, CheckStatus.FAILED, f"{count} violating rows, e.g. {sample}")
            return CheckResult(name, CheckStatus.PASSED, "0 violating rows")
        out += guarded(f"invariant:{inv.name}", one, [])
    return out


def _sample(conn: Any, query: str) -> list:
    """Three violating rows. A SQL_ASCII database's text is read as the bytes it holds: in UTF8
    (pg.conn.connect's) the server checks them and fails on one that is not UTF-8 ('invalid byte
    sequence'), and the invariant was not_verified instead of failed."""
    if conn.execute("SHOW server_encoding").fetchone()[0] == "SQL_ASCII":
        conn.execute("SET client_encoding = 'SQL_ASCII'")
    return conn.execute(sql.SQL("SELECT * FROM ({q}) AS v LIMIT 3").format(q=sql.SQL(query))).fetchall()


def check_freshness(newest: datetime | None, target: datetime) -> CheckResult:
    if newest is None:
        return CheckResult("freshness", CheckStatus.NOT_VERIFIED, "no committed row found in the append-only tables")
    if newest > target:
        return CheckResult("freshness", CheckStatus.FAILED,
                           f"newest row {newest.isoformat()} is after the target {target.isoformat()}")
    return CheckResult("freshness", CheckStatus.PASSED,
                       f"newest row {newest.isoformat()}, {(target - newest).total_seconds():.1f} s before the target")
