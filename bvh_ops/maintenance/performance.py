"""The weekly performance report: top queries from pg_stat_statements by total and mean time with
their change since the snapshot a week back (snapshots kept in ops.statement_snapshots), the cache
hit ratio, sequential scans on large tables (index candidates); index usage over the week (an
index no query used since the snapshot a week back, from ops.index_snapshots), table bloat and its
change over the week (ops.table_snapshots, the estimates the maintenance plan uses), the
monitored endpoints' response times and failures this week against the week before (from the
monitor's raw samples), and recommendations each with its evidence. Without pg_stat_statements
the report says so and keeps the rest. ``compare``, ``index_usage``, ``bloat_trend``,
``endpoint_times`` and ``recommend`` are pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pgerr

from bvh_ops.maintenance.facts import FK_SUPPORT

TOP = 10
SEQ_SCAN_MIN_BYTES = 10 << 20        # a table smaller than this is read faster whole than by index
CACHE_HIT_WARNING = 0.99             # the usual OLTP target
WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Statement:
    queryid: int
    query: str
    calls: int
    total_ms: float
    rows: int


def statements(conn: psycopg.Connection) -> tuple[list[Statement] | None, str]:
    """pg_stat_statements of the connected database, summed per queryid; (None, why) without it."""
    ext = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                       "WHERE e.extname = 'pg_stat_statements'").fetchone()
    if ext is None:
        return None, ("pg_stat_statements is not installed in this database (shared_preload_libraries = "
                      "'pg_stat_statements', then CREATE EXTENSION pg_stat_statements): no query ranking")
    schema = '"' + ext[0].replace('"', '""') + '"'
    try:
        rows = conn.execute(
            f"SELECT queryid, min(query), sum(calls)::bigint, sum(total_exec_time), sum(rows)::bigint "
            f"FROM {schema}.pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND queryid IS NOT NULL GROUP BY queryid").fetchall()
    except (pgerr.ObjectNotInPrerequisiteState, pgerr.InsufficientPrivilege) as exc:
        if not conn.autocommit:
            conn.rollback()
        return None, f"pg_stat_statements cannot be read: {str(exc).strip().splitlines()[0]}"
    return [Statement(int(q), t, int(c), float(ms), int(r)) for q, t, c, ms, r in rows], ""


def compare(current: list[Statement], previous: list[Statement] | None) -> dict[str, list[dict[str, Any]]]:
    """Top queries by total and by mean time over the period since ``previous`` (cumulative
    counters subtracted; a counter that went down was reset: the current value is the period's),
    with the mean's change against the cumulative mean before."""
    before = {s.queryid: s for s in previous or []}
    rows = []
    for s in current:
        p = before.get(s.queryid)
        reset = p is None or s.calls < p.calls
        calls = s.calls if reset else s.calls - p.calls
        total = s.total_ms if reset else s.total_ms - p.total_ms
        if calls <= 0:
            continue
        mean = total / calls
        prev_mean = (p.total_ms / p.calls) if p is not None and p.calls else None
        rows.append({"queryid": s.queryid, "query": " ".join(s.query.split())[:200], "calls": calls,
                     "total_ms": round(total, 3), "mean_ms": round(mean, 3),
                     "mean_change_percent": None if not prev_mean else round(100 * (mean - prev_mean) / prev_mean, 1)})
    return {"by_total": sorted(rows, key=lambda r: -r["total_ms"])[:TOP],
            "by_mean": sorted(rows, key=lambda r: -r["mean_ms"])[:TOP]}


@dataclass(frozen=True)
class IndexUse:
    oid: int                 # the index's OID: one dropped and created again under its name is new
    index: str               # format('%I.%I'): schema.name as SQL reads it
    table: str
    idx_scan: int            # cumulative (a partitioned index: summed over its partitions' indexes)
    size_bytes: int          # (a partitioned index: its partitions' indexes together)
    backs_constraint: bool   # primary key, unique, exclusion, or a foreign key's lookup: never a drop candidate
    valid: bool = True       # an invalid index is the maintenance plan's to rebuild, not a drop candidate


@dataclass(frozen=True)
class TableSize:
    table: str               # format('%I.%I')
    size_bytes: int
    bloat_bytes: int | None  # the maintenance plan's estimate (None: none possible)
    n_live_tup: int
    n_dead_tup: int
    bloat_source: str = "statistics"  # pgstattuple_approx | statistics | none: only like is compared


@dataclass(frozen=True)
class EndpointWeek:
    """A monitored endpoint's samples over one period: how many, how many failed (critical: no
    answer, or a condition not met) or could not be checked (unknown), and its response times."""

    name: str
    service: str
    samples: int
    failed: int
    unknown: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Limits:
    """What the recommendations judge against (the monitor's own thresholds and the maintenance
    settings, so the report and the alerts agree)."""

    response_time_ms: float = 1000.0       # monitor: response_time_warning_ms
    failed_percent: float = 1.0            # monitor: error_rate_warning_percent
    unused_index_bytes: int = 1 << 20      # maintenance: unused_index_min_bytes
    slower_ratio: float = 1.5              # an endpoint's p95 up by half against the week before
    bloat_growth_bytes: int = 64 << 20     # bloat that grew by this much in the period …
    bloat_growth_ratio: float = 0.5        # … and by half of what it was


def limits_of(settings) -> Limits:
    """The report judges by the monitor's and the maintenance plan's own thresholds."""
    return Limits(response_time_ms=settings.response_time_warning_ms,
                  failed_percent=settings.error_rate_warning_percent,
                  unused_index_bytes=settings.maintenance.unused_index_min_bytes)


def index_usage(current: list[IndexUse], previous: list[IndexUse] | None, min_bytes: int, *,
                reset: bool = False) -> dict[str, Any]:
    """Scans per index over the period since ``previous`` (None: since the statistics were reset).
    ``unused``: drop candidates — only against a previous snapshot with no statistics reset
    since (``reset``), of at least ``min_bytes``, valid, backing no constraint, there a week ago
    (the same OID) and scanned by no query since; largest first. An index whose counter went
    down was reset on its own: no evidence either way. ``most_used``: the most scanned."""
    before = {i.oid: i for i in previous or []}
    rows = []
    for i in current:
        p = before.get(i.oid)
        went_down = p is not None and i.idx_scan < p.idx_scan
        scans = i.idx_scan if p is None or went_down else i.idx_scan - p.idx_scan
        judged = previous is not None and not reset and p is not None and not went_down
        rows.append({"index": i.index, "table": i.table, "scans": scans, "bytes": i.size_bytes,
                     "growth_bytes": None if p is None else i.size_bytes - p.size_bytes,
                     "backs_constraint": i.backs_constraint, "judged": judged, "valid": i.valid})
    unused = [r for r in rows if r["judged"] and r["scans"] == 0 and not r["backs_constraint"] and r["valid"]
              and r["bytes"] >= min_bytes]
    return {"unused": sorted(unused, key=lambda r: (-r["bytes"], r["index"]))[:TOP],
            "most_used": sorted((r for r in rows if r["scans"]), key=lambda r: (-r["scans"], r["index"]))[:TOP],
            "count": len(rows), "bytes": sum(i.size_bytes for i in current)}


def bloat_trend(current: list[TableSize], previous: list[TableSize] | None, limits: Limits = Limits()
                ) -> dict[str, list[dict[str, Any]]]:
    """Tables by estimated bloat (``largest``, the TOP), each with its change since ``previous``;
    ``growing``: those whose bloat grew by at least ``bloat_growth_bytes`` and by
    ``bloat_growth_ratio`` of what it was (autovacuum not keeping up), fastest first."""
    before = {t.table: t for t in previous or []}
    rows = []
    for t in current:
        if t.bloat_bytes is None:
            continue
        p = before.get(t.table)
        # an estimate of another kind (pgstattuple one week, statistics the next) is no change
        was = p.bloat_bytes if p is not None and p.bloat_source == t.bloat_source else None
        rows.append({"table": t.table, "bytes": t.size_bytes, "bloat_bytes": t.bloat_bytes,
                     "bloat_percent": round(100 * t.bloat_bytes / t.size_bytes, 1) if t.size_bytes else 0.0,
                     "previous_bloat_bytes": was, "bloat_change_bytes": None if was is None else t.bloat_bytes - was,
                     "source": t.bloat_source, "dead_tuples": t.n_dead_tup,
                     "dead_tuples_change": None if p is None else t.n_dead_tup - p.n_dead_tup})
    growing = [r for r in rows if r["bloat_change_bytes"] is not None
               and r["bloat_change_bytes"] >= limits.bloat_growth_bytes
               and r["bloat_change_bytes"] >= limits.bloat_growth_ratio * r["previous_bloat_bytes"]]
    return {"largest": sorted(rows, key=lambda r: (-r["bloat_bytes"], r["table"]))[:TOP],
            "growing": sorted(growing, key=lambda r: (-r["bloat_change_bytes"], r["table"]))}


def endpoint_times(week: list[EndpointWeek], before: list[EndpointWeek]) -> list[dict[str, Any]]:
    """Each endpoint's week with its change against the week before; one checked the week before
    and not this week is listed with no checks. First those that never answered, then those not
    checked, then the slowest p95."""
    prev = {e.name: e for e in before}
    rows = []
    for e in [*week, *(EndpointWeek(b.name, b.service, 0, 0, 0, None, None, None) for b in before
                       if b.name not in {w.name for w in week})]:
        p = prev.get(e.name)
        change = (round(100 * (e.p95 - p.p95) / p.p95, 1)
                  if p is not None and p.p95 and e.p95 is not None else None)
        rows.append({"endpoint": e.name, "service": e.service, "samples": e.samples, "failed": e.failed,
                     "unknown": e.unknown, "failed_percent": round(100 * e.failed / e.samples, 2) if e.samples else 0.0,
                     "p50_ms": _ms(e.p50), "p95_ms": _ms(e.p95), "p99_ms": _ms(e.p99),
                     "previous_samples": p.samples if p is not None else None,
                     "previous_p95_ms": _ms(p.p95) if p is not None else None, "p95_change_percent": change,
                     "previous_failed_percent": (round(100 * p.failed / p.samples, 2) if p is not None and p.samples
                                                 else None)})
    return sorted(rows, key=lambda r: (2 if r["p95_ms"] is not None else 1 if not r["samples"] else 0,
                                       -(r["p95_ms"] or 0), r["endpoint"]))


def _ms(v: float | None) -> float | None:
    return None if v is None else round(float(v), 1)


def _mib(n: int) -> str:
    return f"{n / 1048576:.0f} MiB" if abs(n) >= 1048576 else f"{n / 1024:.0f} KiB"


def recommend(cache_hit: float | None, seq_scans: list[dict[str, Any]], top: dict[str, list[dict[str, Any]]],
              *, indexes: dict[str, Any] | None = None, bloat: dict[str, Any] | None = None,
              endpoints: list[dict[str, Any]] | None = None, since: str | None = None,
              limits: Limits = Limits(), standby: bool = False) -> list[dict[str, str]]:
    """Recommendations, each with the evidence it rests on. ``since``: when the period began (the
    snapshot compared with; None: the statistics' reset). ``standby``: the target is in recovery —
    no index is judged unused there (its primary's use is not seen) and autovacuum is tuned on
    the primary."""
    period = f"since {since}" if since else "since the statistics were reset"
    out = []
    if cache_hit is not None and cache_hit < CACHE_HIT_WARNING:
        out.append({"recommendation": "review shared_buffers / the working set: the cache hit ratio is below 99 %",
                    "evidence": f"blks_hit / (blks_hit + blks_read) = {cache_hit:.4f}"})
    for t in seq_scans:
        out.append({"recommendation": f"index candidate: {t['table']} is read by sequential scans",
                    "evidence": f"{t['seq_scan']} sequential scans read {t['seq_tup_read']} rows of a "
                                f"{t['bytes'] / 1048576:.0f} MiB table ({t['idx_scan']} index scans)"})
    for q in top.get("by_mean", [])[:3]:
        if q["mean_change_percent"] is not None and q["mean_change_percent"] >= 50:
            out.append({"recommendation": f"query {q['queryid']} got slower: EXPLAIN (ANALYZE, BUFFERS) it",
                        "evidence": f"mean {q['mean_ms']} ms, {q['mean_change_percent']:+.0f}% against before"})
    for i in [] if standby else (indexes or {}).get("unused", []):
        out.append({"recommendation": f"drop candidate: index {i['index']} on {i['table']} was used by no query "
                                      f"{period}",
                    "evidence": f"0 index scans {period}; {_mib(i['bytes'])} written on every change to the "
                                "table; backs no constraint or foreign key (check the standbys' and the monthly "
                                "jobs' queries before dropping)"})
    for t in [] if standby else (bloat or {}).get("growing", []):
        out.append({"recommendation": f"autovacuum is falling behind on {t['table']}: lower its "
                                      "autovacuum_vacuum_scale_factor or raise the cost limit",
                    "evidence": f"estimated bloat {_mib(t['previous_bloat_bytes'])} -> {_mib(t['bloat_bytes'])} "
                                f"({t['bloat_percent']:.0f} % of the table) {period}; {t['dead_tuples']} dead "
                                "tuples"})
    for e in endpoints or []:
        if not e["samples"]:
            out.append({"recommendation": f"endpoint {e['endpoint']} was not checked this week: is the monitor "
                                          "running, and the endpoint still configured?",
                        "evidence": f"0 checks this week, {e['previous_samples']} the week before"})
            continue
        figures = f"p50 {e['p50_ms']} / p95 {e['p95_ms']} / p99 {e['p99_ms']} ms over {e['samples']} checks"
        if e["p95_ms"] is not None and e["p95_ms"] > limits.response_time_ms:
            out.append({"recommendation": f"endpoint {e['endpoint']} is slow: p95 above {limits.response_time_ms:g} ms "
                                          "over the week",
                        "evidence": figures})
        elif (e["p95_change_percent"] is not None
              and e["p95_change_percent"] >= 100 * (limits.slower_ratio - 1)):
            out.append({"recommendation": f"endpoint {e['endpoint']} got slower: p95 "
                                          f"{e['p95_change_percent']:+.0f}% against the week before",
                        "evidence": f"{figures}; the week before p95 {e['previous_p95_ms']} ms"})
        if e["failed_percent"] > limits.failed_percent:
            out.append({"recommendation": f"endpoint {e['endpoint']} failed {e['failed_percent']:g} % of its checks "
                                          f"(above {limits.failed_percent:g} %): see its incidents",
                        "evidence": f"{e['failed']} of {e['samples']} checks critical"
                                    + (f" ({e['previous_failed_percent']:g} % the week before)"
                                       if e["previous_failed_percent"] is not None else "")})
    return out


SNAPSHOT_KEEP = timedelta(days=400)  # a year of weekly trend, then pruned

# Each index as a whole: an index attached to a partitioned one is part of it (it cannot be
# dropped alone), so it is not listed; a partitioned index's scans and size are its partitions'.
# Backing a constraint: primary key, unique, exclusion, or a foreign key's lookup (FK_SUPPORT).
_INDEX_USE = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname), format('%I.%I', tn.nspname, t.relname),
       CASE WHEN c.relkind = 'I' THEN (SELECT coalesce(sum(s2.idx_scan), 0) FROM pg_partition_tree(c.oid) p
                                       JOIN pg_stat_all_indexes s2 ON s2.indexrelid = p.relid)
            ELSE coalesce(s.idx_scan, 0) END,
       CASE WHEN c.relkind = 'I' THEN (SELECT coalesce(sum(pg_relation_size(p.relid)), 0)
                                       FROM pg_partition_tree(c.oid) p WHERE p.isleaf)
            ELSE coalesce(pg_relation_size(c.oid), 0) END,
       i.indisprimary OR i.indisunique OR i.indisexclusion
           OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid) OR """ + FK_SUPPORT + """,
       i.indisvalid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_namespace tn ON tn.oid = t.relnamespace
LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = c.oid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
  AND t.relpersistence <> 't' AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid)
"""

_TABLE_NAMES = """
SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm')
"""

# The answers judged (ok or warning) give the response times; failed checks are counted apart
# (a fast 503 is no response time).
_ENDPOINT_WEEK = """
SELECT name, min(service), count(*), count(*) FILTER (WHERE status = 3), count(*) FILTER (WHERE status = 2),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY value) FILTER (WHERE status <= 1),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY value) FILTER (WHERE status <= 1),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY value) FILTER (WHERE status <= 1)
FROM ops.samples WHERE name = ANY(%s) AND unit = 'ms' AND at >= %s AND at < %s GROUP BY name
"""


def _utc(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def _endpoint_weeks(ops: psycopg.Connection, names: list[str], since: datetime, until: datetime) -> list[EndpointWeek]:
    return [EndpointWeek(n, svc, int(c), int(f), int(u), p50, p95, p99)
            for n, svc, c, f, u, p50, p95, p99 in ops.execute(_ENDPOINT_WEEK, (names, since, until)).fetchall()]


def _snapshot(ops: psycopg.Connection, target: str, now: datetime, stats_reset: datetime | None, standby: bool,
              indexes: list[IndexUse], tables: list[TableSize]) -> tuple[datetime | None, datetime | None,
                                                                       list[IndexUse] | None, list[TableSize] | None]:
    """Store this run's index and table snapshot; return the one about a week old (12 hours of
    slack for a late run): (its time, the statistics' reset then, its indexes, its tables)."""
    row = ops.execute("SELECT taken_at, stats_reset FROM ops.performance_snapshots WHERE target = %s "
                      "AND taken_at <= %s ORDER BY taken_at DESC LIMIT 1",
                      (target, now - WEEK + timedelta(hours=12))).fetchone()
    at, reset_then, before_i, before_t = (row[0], row[1], None, None) if row else (None, None, None, None)
    if at is not None:
        before_i = [IndexUse(*r) for r in ops.execute(
            "SELECT index_oid, index_name, table_name, idx_scan, size_bytes, backs_constraint, valid "
            "FROM ops.index_snapshots WHERE target = %s AND taken_at = %s", (target, at))]
        before_t = [TableSize(*r) for r in ops.execute(
            "SELECT table_name, size_bytes, bloat_bytes, n_live_tup, n_dead_tup, bloat_source FROM ops.table_snapshots "
            "WHERE target = %s AND taken_at = %s", (target, at))]
    ops.execute("INSERT INTO ops.performance_snapshots (target, taken_at, stats_reset, in_recovery) "
                "VALUES (%s, %s, %s, %s)", (target, now, stats_reset, standby))
    with ops.cursor() as cur:
        with cur.copy("COPY ops.index_snapshots (target, taken_at, index_oid, index_name, table_name, idx_scan, "
                      "size_bytes, backs_constraint, valid) FROM STDIN") as copy:
            for i in indexes:
                copy.write_row((target, now, i.oid, i.index, i.table, i.idx_scan, i.size_bytes, i.backs_constraint,
                                i.valid))
        with cur.copy("COPY ops.table_snapshots (target, taken_at, table_name, size_bytes, bloat_bytes, "
                      "bloat_source, n_live_tup, n_dead_tup) FROM STDIN") as copy:
            for t in tables:
                copy.write_row((target, now, t.table, t.size_bytes, t.bloat_bytes, t.bloat_source, t.n_live_tup,
                                t.n_dead_tup))
    return at, reset_then, before_i, before_t


def report(conn: psycopg.Connection, ops: psycopg.Connection | None, target: str, now: datetime, *,
           endpoints: list[str] | tuple[str, ...] = (), limits: Limits = Limits()) -> dict[str, Any]:
    """Gather, snapshot (when ``ops`` is given) and compare with the snapshots a week back.
    ``endpoints``: the monitored endpoints' names (their samples are in the ops database)."""
    from bvh_ops.maintenance.facts import gather

    current, why = statements(conn)
    notes = [why] if why else []
    previous_at = None
    top: dict[str, list[dict[str, Any]]] = {"by_total": [], "by_mean": []}
    facts = gather(conn, now=now, indexes=False)  # tables' bloat as the maintenance plan estimates it
    names = {(sch, rel): ident for sch, rel, ident in conn.execute(_TABLE_NAMES).fetchall()}
    table_now = [TableSize(names.get((t.schema, t.name), t.qualified), t.size_bytes, t.bloat_bytes, t.n_live_tup,
                           t.n_dead_tup, t.bloat_source) for t in facts.tables]
    index_now = [IndexUse(int(o), ix, tb, int(sc), int(sz), bool(b), bool(v))
                 for o, ix, tb, sc, sz, b, v in conn.execute(_INDEX_USE).fetchall()]
    stats_reset = conn.execute("SELECT stats_reset FROM pg_stat_database "
                               "WHERE datname = current_database()").fetchone()[0]
    standby = facts.in_recovery
    if standby:
        notes.append("the target is a standby (in recovery): no index is judged unused and no autovacuum advice "
                     "is given here — its primary's report has them")
    index_before = table_before = structure_at = None
    reset = False
    endpoints_doc: list[dict[str, Any]] = []
    series: dict[str, Any] = {"p95_by_day": {}, "bloat_by_snapshot": {}}
    if ops is not None:
        with ops.transaction():
            previous = None
            if current is not None:
                previous_at = ops.execute("SELECT max(taken_at) FROM ops.statement_snapshots WHERE target = %s "
                                          "AND taken_at <= %s", (target, now - WEEK + timedelta(hours=12))).fetchone()[0]
                if previous_at is not None:
                    previous = [Statement(*r) for r in ops.execute(
                        "SELECT queryid, query, calls, total_ms, rows FROM ops.statement_snapshots "
                        "WHERE target = %s AND taken_at = %s", (target, previous_at))]
                with ops.cursor() as cur, cur.copy("COPY ops.statement_snapshots (target, taken_at, queryid, query, "
                                                   "calls, total_ms, rows) FROM STDIN") as copy:
                    for st in current:
                        copy.write_row((target, now, st.queryid, st.query, st.calls, st.total_ms, st.rows))
                top = compare(current, previous)
                if previous is None:
                    notes.append("no statement snapshot from a week ago yet: query figures are since the statistics "
                                 "were reset")
            structure_at, reset_then, index_before, table_before = _snapshot(ops, target, now, stats_reset, standby,
                                                                             index_now, table_now)
            if structure_at is None:
                notes.append("no index or table snapshot from a week ago yet: no index is judged unused, bloat has "
                             "no change to show")
            elif stats_reset is not None and (reset_then is None or stats_reset > reset_then):
                reset = True
                notes.append(f"the target's statistics were reset at {_utc(stats_reset)}, after the snapshot of "
                             f"{_utc(structure_at)}: no index is judged unused until a week of statistics")
            ops.execute("DELETE FROM ops.performance_snapshots WHERE taken_at < %s", (now - SNAPSHOT_KEEP,))
            ops.execute("DELETE FROM ops.statement_snapshots WHERE taken_at < %s", (now - SNAPSHOT_KEEP,))
        names_ = list(endpoints)
        if names_:
            week = _endpoint_weeks(ops, names_, now - WEEK, now)
            endpoints_doc = endpoint_times(week, _endpoint_weeks(ops, names_, now - 2 * WEEK, now - WEEK))
            if not week:
                notes.append("no monitor samples of the endpoints in the last week: is `bvh-ops monitor` running?")
            for day, name, p95 in ops.execute(
                    "SELECT (at AT TIME ZONE 'UTC')::date, name, percentile_cont(0.95) WITHIN GROUP (ORDER BY value) "
                    "FROM ops.samples WHERE name = ANY(%s) AND unit = 'ms' AND at >= %s AND at < %s AND status <= 1 "
                    "AND value IS NOT NULL GROUP BY 1, 2 ORDER BY 1", (names_, now - 4 * WEEK, now)).fetchall():
                series["p95_by_day"].setdefault(name, []).append([day.isoformat(), _ms(p95)])
        else:
            notes.append("no endpoints configured (endpoints in bvh-ops.toml): no response times")
    else:
        notes.append("no ops database: nothing compared with a week ago")
        if current is not None:
            top = compare(current, None)
    indexes = index_usage(index_now, index_before, limits.unused_index_bytes, reset=reset)
    bloat = bloat_trend(table_now, table_before, limits)
    if ops is not None and bloat["largest"]:
        charted = [r["table"] for r in bloat["largest"][:5]]
        for at, table, b in ops.execute(
                "SELECT taken_at, table_name, bloat_bytes FROM ops.table_snapshots WHERE target = %s "
                "AND table_name = ANY(%s) AND taken_at >= %s AND bloat_bytes IS NOT NULL ORDER BY taken_at",
                (target, charted, now - 12 * WEEK)).fetchall():
            series["bloat_by_snapshot"].setdefault(table, []).append([_utc(at), int(b)])
    hit = conn.execute("SELECT sum(blks_hit)::float / nullif(sum(blks_hit) + sum(blks_read), 0) "
                       "FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
    seq = [{"table": t, "seq_scan": ss, "seq_tup_read": rd, "idx_scan": ix, "bytes": b}
           for t, ss, rd, ix, b in conn.execute(
               "SELECT format('%%I.%%I', s.schemaname, s.relname), s.seq_scan, s.seq_tup_read, coalesce(s.idx_scan, 0), "
               "c.relpages::bigint * current_setting('block_size')::bigint FROM pg_stat_user_tables s "
               "JOIN pg_class c ON c.oid = s.relid WHERE s.seq_scan > 0 "
               "AND c.relpages::bigint * current_setting('block_size')::bigint >= %s "
               "AND s.seq_tup_read > 10 * greatest(c.reltuples, 1) ORDER BY s.seq_tup_read DESC LIMIT 10",
               (SEQ_SCAN_MIN_BYTES,))]
    notes += [n for n in facts.notes if n.startswith("pgstattuple")]
    since = None if reset else _utc(structure_at)
    return {"target": target, "at": _utc(now), "since": _utc(previous_at),
            "pg_stat_statements": current is not None, "top_queries": top,
            "cache_hit_ratio": None if hit is None else round(float(hit), 5), "sequential_scans": seq,
            "indexes": {**indexes, "since": since}, "bloat": {**bloat, "since": _utc(structure_at)},
            "endpoints": endpoints_doc, "series": series, "standby": standby,
            "recommendations": recommend(hit, seq, top, indexes=indexes, bloat=bloat, endpoints=endpoints_doc,
                                         since=since, limits=limits, standby=standby),
            "notes": notes}


def _md(text: Any) -> str:
    """Text from the target (names) in a markdown table cell or list item: no line break, no
    column break, no link, image, emphasis or code span of its own."""
    out = " ".join(str(text).split())
    for ch in "\\`*_[]<>!#":
        out = out.replace(ch, "\\" + ch)
    return out.replace("|", "\\|")


def _cell(v: Any) -> str:
    return "-" if v is None else _md(v)


def _signed(v: float | None, unit: str = "%") -> str:
    return "-" if v is None else f"{v:+.1f}{unit}"


def markdown(doc: dict[str, Any], charts: dict[str, bytes] | None = None) -> str:
    """The report for the Prefect artifact and the terminal; ``charts`` (title -> PNG) are embedded."""
    import base64

    lines = [f"# Performance report: {doc['target']}", "",
             f"At {doc['at']}, queries compared with {doc['since'] or 'the last statistics reset'}.", ""]
    lines += [f"> {n}" for n in doc["notes"]]
    lines += ["", "## Recommendations", ""]
    lines += [f"- {_md(r['recommendation'])} ({_md(r['evidence'])})" for r in doc["recommendations"]] or ["- none"]
    ratio = "-" if doc["cache_hit_ratio"] is None else f"{doc['cache_hit_ratio']:.4f}"
    lines += ["", f"Cache hit ratio: {ratio}", ""]
    for key, title in (("by_total", "Top queries by total time"), ("by_mean", "Top queries by mean time")):
        lines += [f"## {title}", "", "| query | calls | total ms | mean ms | mean change |", "|---|---|---|---|---|"]
        for q in doc["top_queries"][key]:
            change = "-" if q["mean_change_percent"] is None else f"{q['mean_change_percent']:+.1f}%"
            lines.append(f"| {_md(q['query'][:80])} | {q['calls']} | {q['total_ms']} | {q['mean_ms']} | {change} |")
        lines.append("")
    eps = doc.get("endpoints") or []
    if eps:
        lines += ["## Endpoint response times, last 7 days", "",
                  "| endpoint | service | checks | failed | p50 ms | p95 ms | p99 ms | p95 change | failed before |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in eps:
            before = "-" if e["previous_failed_percent"] is None else f"{e['previous_failed_percent']:g} %"
            lines.append(f"| {_cell(e['endpoint'])} | {_cell(e['service'])} | {e['samples']} | "
                         f"{e['failed']} ({e['failed_percent']:g} %) | {_cell(e['p50_ms'])} | {_cell(e['p95_ms'])} | "
                         f"{_cell(e['p99_ms'])} | {_signed(e['p95_change_percent'])} | {before} |")
        lines.append("")
    idx = doc.get("indexes")
    if idx is not None:
        since = f"since {idx['since']}" if idx.get("since") else "since the statistics were reset"
        lines += [f"## Index usage {since}", "",
                  f"{idx['count']} indexes, {_mib(idx['bytes'])} in all.", ""]
        if idx["unused"]:
            lines += ["Not used by any query (backing no constraint):", "", "| index | table | size |", "|---|---|---|"]
            lines += [f"| {_cell(r['index'])} | {_cell(r['table'])} | {_mib(r['bytes'])} |" for r in idx["unused"]]
            lines.append("")
        if idx["most_used"]:
            lines += ["Most used:", "", "| index | scans | size | growth |", "|---|---|---|---|"]
            lines += [f"| {_cell(r['index'])} | {r['scans']} | {_mib(r['bytes'])} | "
                      f"{'-' if r['growth_bytes'] is None else _mib(r['growth_bytes'])} |" for r in idx["most_used"]]
            lines.append("")
    bl = doc.get("bloat")
    if bl is not None and bl["largest"]:
        lines += ["## Table bloat (estimated)", "", "| table | size | bloat | share | change | dead tuples |",
                  "|---|---|---|---|---|---|"]
        for r in bl["largest"]:
            change = "-" if r["bloat_change_bytes"] is None else _mib(r["bloat_change_bytes"])
            lines.append(f"| {_cell(r['table'])} | {_mib(r['bytes'])} | {_mib(r['bloat_bytes'])} | "
                         f"{r['bloat_percent']:g} % | {change} | {r['dead_tuples']} |")
        lines.append("")
    for title, png in (charts or {}).items():
        lines += [f"### {title}", "", f"![{title}](data:image/png;base64,{base64.b64encode(png).decode()})", ""]
    return "\n".join(lines)
