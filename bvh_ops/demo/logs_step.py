"""The demo's logs and audit step (#13): the sample platform's JSON log collected into the ops
database; a brute-force attack and a structuring pattern planted among normal traffic, collected
and found by the analysis with their evidence; a backdated day archived to the repository,
dropped from the hot store and found again with ``--archived``; the audit trail signed and
verified, deliberately edited (verify names the entry), restored (intact again).

Four parts, each reported on its own: a part that fails prints FAILED and fails the step, and
the parts after it still run where they can. Bounds: the platform must answer within 60 s, every
planted request has a 30 s timeout, the step's own statements a 20 s statement_timeout."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape

from bvh_ops.config import LogSource, Settings
from bvh_ops.demo.parts import run_part, say

SOURCE = "platform"
ARCHIVE_CATEGORY = "security"     # the day backdated and archived: the brute force's category
BACKDATE_DAYS = 40                # past the default 30 hot days
EVIDENCE_LINES = 3
PLANTED = ("brute_force", "structuring")
NORMAL_USERS = 40                 # the planter's accounts start at 41


@dataclass
class LogsDemo:
    """What the step found (returned for the test; the demo prints it)."""

    collected: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)   # planted detector -> its finding
    archive: dict[str, Any] = field(default_factory=dict)
    audit: list[tuple[str, Any]] = field(default_factory=list)        # ("intact", n) / ("tampered", seq)
    failures: list[str] = field(default_factory=list)


def _ops_conn(dsn: str):
    from bvh_ops.pg.conn import connect

    conn = connect(dsn, autocommit=True)
    conn.execute("SET statement_timeout = '20s'")
    return conn


def _part(console: Console, result: LogsDemo, title: str, fn) -> Any:
    return run_part(console, result.failures, title.split(":")[0], title, fn)


def _say(console: Console, line: str, indent: int = 4) -> None:
    say(console, line, indent)


def _evidence_line(e: dict[str, Any]) -> str:
    rest = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("at", "event", "source", "service", "category",
                                                                   "level"))
    return f"{e.get('at', '')} {e.get('event', '')} {rest}".strip()


def logs_settings(settings: Settings, ops_dsn: str, log_path: Path) -> Settings:
    """The demo's settings with the ops database and one [[log_sources]] entry: the platform's log."""
    return settings.model_copy(update={
        "ops_database_url": SecretStr(ops_dsn),
        "log_sources": [LogSource(name=SOURCE, path=str(log_path), format="json")]})


def run_logs_step(settings: Settings, ops_dsn: str | None, state: Path, console: Console) -> tuple[bool, str,
                                                                                                   LogsDemo]:
    """The step; ``settings.database_url`` is the platform's database. (ok, summary row, result)."""
    from bvh_ops.demo.platform import WorkloadDriver, serve_platform

    result = LogsDemo()
    if ops_dsn is None:
        result.failures.append("no ops database on the demo cluster")
        console.print("  [red]FAILED[/]: logs and audit need the ops database 'bvh_ops'")
        return False, "FAILED: no ops database", result
    if settings.database_url is None:
        raise ValueError("the logs step needs database_url (the platform's database)")
    log = state / "platform.jsonl"
    reused = log.exists() and log.stat().st_size > 0
    settings = logs_settings(settings, ops_dsn, log)
    platform_dsn = settings.database_url.get_secret_value()
    t_start = datetime.now(UTC)

    console.print(f"[bold cyan]›[/] logs: the sample platform again on {log.name} "
                  f"({'appending to the monitoring step’s log' if reused else 'a new log'}), with normal traffic …")
    try:
        platform = serve_platform(platform_dsn, "127.0.0.1", 0, log, window_s=5, ready_timeout=60)
    except Exception as exc:  # noqa: BLE001
        result.failures.append(f"platform: {type(exc).__name__}: {exc}")
        console.print(f"  [red]FAILED[/]: {escape(result.failures[-1])}")
        platform = None
    truth = None
    if platform is not None:
        try:
            with WorkloadDriver(platform.url, rate=20, threads=2, users=NORMAL_USERS) as work:
                time.sleep(2)
                _part(console, result, "logs: collecting the platform's JSON log into the ops database "
                                       "([[log_sources]] name = platform, format = json)",
                      lambda: _collect_first(settings, ops_dsn, t_start, result, console))
                truth = _part(console, result, "logs: planting a brute-force attack (203.0.113.10) and "
                                               "structured deposits among the normal traffic",
                              lambda: _plant(platform.url, platform_dsn, console))
                time.sleep(0.5)
            if work.stats.errors:
                console.print(f"  (normal traffic: {work.stats.errors} request errors)")
        finally:
            platform.stop()
        if truth is not None:
            _part(console, result, "logs: collecting again and running the analysis (security, performance, "
                                   "fraud detectors)",
                  lambda: _analyse(settings, ops_dsn, t_start, truth, result, console))
    _part(console, result, f"logs: an archive month: a day of {ARCHIVE_CATEGORY} records backdated "
                           f"{BACKDATE_DAYS} days, the retention plan applied (archive → verify → drop), "
                           "then searched with --archived",
          lambda: _archive(settings, ops_dsn, t_start, result, console))
    _part(console, result, "audit: checkpoint (signed digest) and verify; a deliberate edit; restored",
          lambda: _audit(settings, ops_dsn, result, console))

    if result.failures:
        return False, "FAILED: " + "; ".join(result.failures), result
    brute, fraud = result.findings["brute_force"], result.findings["structuring"]
    intact = result.audit[0][1]
    return True, (f"OK: {result.collected} log records collected; brute force {brute['subject']} "
                  f"({brute['count']} failures) and structuring {fraud['subject']} ({fraud['count']} deposits) "
                  f"found; {result.archive['records']} records archived for {result.archive['day']}; "
                  f"audit verify intact ({intact} entries) → tampered at seq {result.audit[1][1]} → intact"), result


# -- the parts --------------------------------------------------------------------------------------------


def _collect_first(settings: Settings, ops_dsn: str, since: datetime, result: LogsDemo, console: Console) -> None:
    from bvh_ops.logs.collect import collect_configured
    from bvh_ops.logs.search import text_line
    from bvh_ops.logs.store import Query, iter_records

    res = collect_configured(settings)
    if res.errors:
        raise RuntimeError("; ".join(m for s in res.sources for m in s.messages) or "collection errors")
    result.collected += res.records
    with _ops_conn(ops_dsn) as conn:
        result.by_category = dict(conn.execute(
            "SELECT category, count(*) FROM ops.log_records WHERE source = %s GROUP BY 1 ORDER BY 2 DESC",
            (SOURCE,)).fetchall())
        sample = list(iter_records(conn, Query(since=since, category="security", limit=EVIDENCE_LINES)))
    if res.records == 0:
        raise RuntimeError("no record collected from the platform's log")
    _say(console, f"{res.records} records from {res.sources[0].files} file ({res.sources[0].bytes} bytes), "
                  f"{res.quarantined} quarantined, in {res.seconds:.1f} s", 2)
    _say(console, "in the hot store now, by category: "
                  + ", ".join(f"{c} {n}" for c, n in result.by_category.items()), 2)
    _say(console, f"bvh-ops logs search --category security --since {since:%H:%M:%S} --limit {EVIDENCE_LINES}:", 2)
    for rec in sample:
        _say(console, text_line(rec))


def _plant(url: str, platform_dsn: str, console: Console) -> dict[str, set[str]]:
    from bvh_ops.demo.planter import plant

    truth = plant(url, platform_dsn, PLANTED)
    _say(console, "planted (ground truth): " + "; ".join(f"{k} {', '.join(sorted(v))}" for k, v in truth.items()), 2)
    return truth


def _analyse(settings: Settings, ops_dsn: str, since: datetime, truth: dict[str, set[str]], result: LogsDemo,
             console: Console) -> None:
    from bvh_ops.logs.analysis.run import run_analysis
    from bvh_ops.logs.collect import collect_configured

    res = collect_configured(settings)
    result.collected += res.records
    _say(console, f"{res.records} new records collected (read on from the stored offset)", 2)
    now = datetime.now(UTC) + timedelta(seconds=1)
    doc = run_analysis(settings, ops_dsn, since - timedelta(minutes=1), now, report=False)
    _say(console, f"analysis over {doc['records']} records since {since:%H:%M:%S}: {len(doc['findings'])} "
                  "finding(s) in all (not routed to alerting in the demo)", 2)
    missing = []
    for detector in PLANTED:
        found = sorted((f for f in doc["findings"] if f["detector"] == detector and f["subject"] in truth[detector]),
                       key=lambda f: not f["subject"].startswith("ip:"))   # the attacker's address first
        if not found:
            missing.append(f"{detector} {sorted(truth[detector])}")
            continue
        f = found[0]
        if not f["evidence"]:
            missing.append(f"{detector} {f['subject']} without evidence")
            continue
        result.findings[detector] = f
        _say(console, f"[{f['severity'].upper()}] {f['detector']} ({f['category']}) {f['subject']}: {f['count']} "
                      f"between {f['first_seen'][11:19]} and {f['last_seen'][11:19]} UTC — {f['detail']}", 2)
        for e in f["evidence"][:EVIDENCE_LINES]:
            _say(console, "evidence: " + _evidence_line(e))
    if missing:
        raise RuntimeError("planted but not found: " + "; ".join(missing))


def _archive_day(conn, today: date) -> date:
    """BACKDATE_DAYS before today, or earlier where an earlier demo already archived that day."""
    day = today - timedelta(days=BACKDATE_DAYS)
    taken = {d for (d,) in conn.execute("SELECT day FROM ops.log_archives WHERE category = %s",
                                        (ARCHIVE_CATEGORY,))}
    while day in taken:
        day -= timedelta(days=1)
    return day


def _archive(settings: Settings, ops_dsn: str, since: datetime, result: LogsDemo, console: Console) -> None:
    from bvh_ops.logs.archive import apply, state
    from bvh_ops.logs.archive import partition as partition_name
    from bvh_ops.logs.retention import plan
    from bvh_ops.logs.search import record_of, text_line
    from bvh_ops.logs.store import Query, iter_records
    from bvh_ops.opsdb.migrations import migrate

    now = datetime.now(UTC)
    with _ops_conn(ops_dsn) as conn:
        migrate(conn)
        day = _archive_day(conn, now.date())
        with conn.transaction():
            conn.execute("SELECT ops.ensure_log_partition(%s, %s)", (ARCHIVE_CATEGORY, day))
            copied = conn.execute(
                "INSERT INTO ops.log_records (at, category, source, level, event, message, fields, file_id, "
                "file_offset) SELECT (%s::date + (at AT TIME ZONE 'UTC')::time) AT TIME ZONE 'UTC', category, "
                "source, level, event, message, fields, file_id, file_offset FROM ops.log_records "
                "WHERE category = %s AND source = %s AND at >= %s",
                (day, ARCHIVE_CATEGORY, SOURCE, since - timedelta(minutes=1))).rowcount
        if copied == 0:
            raise RuntimeError(f"no {ARCHIVE_CATEGORY} record of this run to backdate")
        _say(console, f"{copied} {ARCHIVE_CATEGORY} records of this run copied to {day} "
                      f"({BACKDATE_DAYS}+ days ago) in partition {partition_name(ARCHIVE_CATEGORY, day).as_string(conn)}",
             2)
        partitions, archives, holds = state(conn, now)
        actions = [a for a in plan(partitions, archives, holds, now, hot_days=settings.log_hot_days,
                                   retention=settings.log_retention_days)
                   if (a.category, a.day) == (ARCHIVE_CATEGORY, day)]
        _say(console, "bvh-ops logs retention (the plan for that day):", 2)
        for a in actions:
            _say(console, f"{a.kind:<16} {a.category:<12} {a.day}  {a.why}")
        outcome = apply(conn, settings, actions, now)
        failed = [o for o in outcome if not o.get("done")]
        if failed:
            raise RuntimeError("; ".join(f"{o['action']}: {o.get('error') or o.get('skipped')}" for o in failed))
        row = conn.execute("SELECT object_key, records, bytes_stored, partition_dropped_at IS NOT NULL "
                           "FROM ops.log_archives WHERE category = %s AND day = %s",
                           (ARCHIVE_CATEGORY, day)).fetchone()
        key, records, size, dropped = row
        hot = conn.execute("SELECT to_regclass(%s)", (f"ops.log_{ARCHIVE_CATEGORY}_{day:%Y%m%d}",)).fetchone()[0]
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        in_hot = sum(1 for _ in iter_records(conn, Query(since=start, until=start + timedelta(days=1))))
        _say(console, f"archive {key}: {records} records, {size} bytes stored (JSON Lines, zstd, AES-256-GCM), "
                      f"read back and verified", 2)
        _say(console, f"hot store: partition {'dropped' if dropped and hot is None else 'STILL THERE'}; "
                      f"`bvh-ops logs search --since {day} --until {day + timedelta(days=1)}` finds {in_hot} records",
             2)
        from bvh_ops.logs.archive import iter_archived

        docs = list(iter_archived(settings, conn, start, start + timedelta(days=1), ARCHIVE_CATEGORY))
        _say(console, f"`bvh-ops logs search --archived --since {day} --until {day + timedelta(days=1)}` finds "
                      f"{len(docs)} records (decrypted from the repository), e.g.:", 2)
        for doc in docs[:2]:
            _say(console, text_line(record_of(doc)))
    if not dropped or hot is not None or in_hot or len(docs) != records or records != copied:
        raise RuntimeError(f"archive of {day}: {records} archived of {copied}, partition dropped {dropped}, "
                           f"{in_hot} still hot, {len(docs)} found archived")
    result.archive = {"day": day, "key": key, "records": records, "bytes": size, "found_archived": len(docs)}


def _audit(settings: Settings, ops_dsn: str, result: LogsDemo, console: Console) -> None:
    from bvh_ops.audit.digest import checkpoint, verify_trail

    def verify(conn, label: str):
        report = verify_trail(settings, conn)
        if report.ok:
            _say(console, f"bvh-ops audit verify ({label}): audit trail intact: {report.entries} entries (seq "
                          f"{report.first_seq or 0}..{report.head_seq}), head {report.head_hash[:16]}, "
                          f"{report.digests} signed digests", 2)
            result.audit.append(("intact", report.entries))
        else:
            _say(console, f"bvh-ops audit verify ({label}): AUDIT TRAIL TAMPERED: {len(report.findings) + report.more}"
                          f" problem(s), first bad entry seq {report.first_bad}", 2)
            for f in sorted(report.findings, key=lambda f: (f.seq is None, f.seq or 0))[:3]:
                _say(console, f.line())
            result.audit.append(("tampered", report.first_bad))
        return report

    with _ops_conn(ops_dsn) as conn:
        digest, new = checkpoint(settings, conn, datetime.now(UTC))
        _say(console, f"checkpoint: digest at seq {digest.seq} {'signed now' if new else '(already signed)'} "
                      f"(Ed25519), in the ops database and the repository ({digest.object_key})", 2)
        if not verify(conn, "before").ok:
            raise RuntimeError("the audit trail does not verify before the demo's edit")
        row = conn.execute(
            "SELECT seq, action, data::text, data -> 'fields' ->> 'amount' FROM ops.audit_chain WHERE seq <= %s "
            "AND action = 'wallet.deposit' AND jsonb_typeof(data -> 'fields' -> 'amount') = 'number' "
            "ORDER BY (data -> 'fields' ->> 'amount')::numeric DESC, seq DESC LIMIT 1",   # a structured deposit
            (digest.seq,)).fetchone() \
            or conn.execute("SELECT seq, action, data::text, NULL FROM ops.audit_chain WHERE seq <= %s "
                            "ORDER BY seq DESC LIMIT 1", (digest.seq,)).fetchone()
        seq, action, original, amount = row
        edit = ("jsonb_set(data, '{fields,amount}', to_jsonb(((data->'fields'->>'amount')::numeric / 10)))"
                if amount else "data || '{\"edited\": true}'::jsonb")
        _say(console, f"the deliberate edit: entry {seq} ({action}) "
                      f"{f'its amount {amount} rewritten as a tenth of it' if amount else 'given a new field'}, "
                      "with the append-only trigger disabled for that one transaction "
                      "(ALTER TABLE ops.audit_chain DISABLE TRIGGER … UPDATE … ENABLE TRIGGER)", 2)
        try:
            _edit(conn, f"UPDATE ops.audit_chain SET data = {edit} WHERE seq = %s", (seq,))
            verify(conn, "after the edit")
        finally:
            _edit(conn, "UPDATE ops.audit_chain SET data = %s::jsonb WHERE seq = %s", (original, seq))
            _say(console, f"entry {seq} restored from the saved original (trigger disabled and re-enabled again)", 2)
        verify(conn, "after the restore")
    states = [s for s, _ in result.audit]
    if states != ["intact", "tampered", "intact"] or result.audit[1][1] != seq:
        raise RuntimeError(f"audit verify gave {result.audit}, expected intact → tampered at seq {seq} → intact")


def _edit(conn, statement: str, params: tuple) -> None:
    """The demo's deliberate edit: the append-only trigger off for this one transaction only."""
    with conn.transaction():
        conn.execute("ALTER TABLE ops.audit_chain DISABLE TRIGGER audit_chain_append_only")
        conn.execute(statement, params)
        conn.execute("ALTER TABLE ops.audit_chain ENABLE TRIGGER audit_chain_append_only")
