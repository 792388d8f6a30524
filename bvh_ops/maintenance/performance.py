"""The weekly performance report (first part): top queries from pg_stat_statements by total and
mean time with their change since the snapshot a week back (snapshots kept in
ops.statement_snapshots), the cache hit ratio, sequential scans on large tables (index
candidates), and recommendations each with its evidence. Without pg_stat_statements the report
says so and keeps the rest. ``compare`` and ``recommend`` are pure.

Not yet here (say so in the report): index usage and bloat trends, API response times from the
monitoring samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pgerr

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


def recommend(cache_hit: float | None, seq_scans: list[dict[str, Any]], top: dict[str, list[dict[str, Any]]]
              ) -> list[dict[str, str]]:
    """Recommendations, each with the evidence it rests on."""
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
    return out


def report(conn: psycopg.Connection, ops: psycopg.Connection | None, target: str, now: datetime) -> dict[str, Any]:
    """Gather, snapshot (when ``ops`` is given) and compare with the snapshot a week back."""
    current, why = statements(conn)
    notes = [why] if why else []
    notes.append("not yet in this report: index usage and bloat trends, API response times and error rates")
    previous_at = None
    top: dict[str, list[dict[str, Any]]] = {"by_total": [], "by_mean": []}
    if current is not None:
        previous = None
        if ops is not None:
            row = ops.execute("SELECT max(taken_at) FROM ops.statement_snapshots WHERE target = %s AND taken_at <= %s",
                              (target, now - WEEK + timedelta(hours=12))).fetchone()
            previous_at = row[0]
            if previous_at is not None:
                previous = [Statement(*r) for r in ops.execute(
                    "SELECT queryid, query, calls, total_ms, rows FROM ops.statement_snapshots "
                    "WHERE target = %s AND taken_at = %s", (target, previous_at))]
            with ops.cursor() as cur, cur.copy("COPY ops.statement_snapshots (target, taken_at, queryid, query, "
                                               "calls, total_ms, rows) FROM STDIN") as copy:
                for s in current:
                    copy.write_row((target, now, s.queryid, s.query, s.calls, s.total_ms, s.rows))
        top = compare(current, previous)
        if previous is None:
            notes.append("no snapshot from a week ago yet: figures are since the statistics were reset")
    hit = conn.execute("SELECT sum(blks_hit)::float / nullif(sum(blks_hit) + sum(blks_read), 0) "
                       "FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]
    seq = [{"table": f"{s}.{t}", "seq_scan": ss, "seq_tup_read": rd, "idx_scan": ix, "bytes": b}
           for s, t, ss, rd, ix, b in conn.execute(
               "SELECT s.schemaname, s.relname, s.seq_scan, s.seq_tup_read, coalesce(s.idx_scan, 0), "
               "c.relpages::bigint * current_setting('block_size')::bigint FROM pg_stat_user_tables s "
               "JOIN pg_class c ON c.oid = s.relid WHERE s.seq_scan > 0 "
               "AND c.relpages::bigint * current_setting('block_size')::bigint >= %s "
               "AND s.seq_tup_read > 10 * greatest(c.reltuples, 1) ORDER BY s.seq_tup_read DESC LIMIT 10",
               (SEQ_SCAN_MIN_BYTES,))]
    return {"target": target, "at": now.isoformat(), "since": previous_at.isoformat() if previous_at else None,
            "pg_stat_statements": current is not None, "top_queries": top,
            "cache_hit_ratio": None if hit is None else round(float(hit), 5), "sequential_scans": seq,
            "recommendations": recommend(hit, seq, top), "notes": notes}


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Performance report: {doc['target']}", "",
             f"At {doc['at']}, compared with {doc['since'] or 'the last statistics reset'}.", ""]
    lines += [f"> {n}" for n in doc["notes"]]
    ratio = "-" if doc["cache_hit_ratio"] is None else f"{doc['cache_hit_ratio']:.4f}"
    lines += ["", f"Cache hit ratio: {ratio}", ""]
    for key, title in (("by_total", "Top queries by total time"), ("by_mean", "Top queries by mean time")):
        lines += [f"## {title}", "", "| query | calls | total ms | mean ms | mean change |", "|---|---|---|---|---|"]
        for q in doc["top_queries"][key]:
            change = "-" if q["mean_change_percent"] is None else f"{q['mean_change_percent']:+.1f}%"
            lines.append(f"| `{q['query'][:80]}` | {q['calls']} | {q['total_ms']} | {q['mean_ms']} | {change} |")
        lines.append("")
    lines += ["## Recommendations", ""]
    lines += [f"- {r['recommendation']} ({r['evidence']})" for r in doc["recommendations"]] or ["- none"]
    return "\n".join(lines)
