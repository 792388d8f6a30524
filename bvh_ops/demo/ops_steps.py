"""The demo's operations steps (#14 maintenance, #15 security, #16 capacity), after the logs step:

- maintenance: a table engineered bloated on the demo database (autovacuum off for it, every row
  updated, half deleted), ``maintain weekly --dry-run``'s plan, then the real run inside a
  maintenance window set to cover now; the plan and the result (before/after dead tuples,
  durations, findings) as ``bvh-ops maintain`` prints them; the table dropped afterwards;
- security: ``security scan`` of the demo cluster (counts per severity, the top findings with
  their id, evidence and fix, what was not checked); ``security baseline accept``; one change
  (a new login role ``demo_intruder`` granted SELECT on the users table); ``security audit``
  shows that drift with before/after, and its scan finds the intruder reading the platform's
  sensitive columns (PG-DATA-001: ``[security] sensitive_columns`` / ``app_roles`` set for the demo); the change cleaned up and the audit clean again;
- capacity: ``capacity collect`` (backfilled from the demo's backups in the repository and the
  platform's created_at columns) and the capacity report's table; on a fresh demo most series
  are *unpredictable* (too little history) and say why; the charts written to the state dir.

Each step is reported on its own: a step that fails prints FAILED and fails the demo's result,
and the steps after it still run. Bounds: every maintenance statement runs under a 2 s
lock_timeout and a 20 s statement_timeout, the step's own statements under a 20 s
statement_timeout; the three together take a few seconds on the demo's data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console

from bvh_ops.config import Settings
from bvh_ops.demo.parts import run_part, say

BLOATED = "public.demo_bloated"
BLOAT_ROWS = 20_000
INTRUDER = "demo_intruder"
GRANTED_ON = "public.users"
TOP_FINDINGS = 6
# The data check (PG-DATA-001): the platform's personal data, and the intruder as an application
# role that must not read it.
SENSITIVE = ["public.users.email", "public.users.phone", "public.payments.raw_response"]
CHARTS_DIR = "capacity-charts"


@dataclass
class OpsDemo:
    """What the steps found (returned for the test; the demo prints it)."""

    plan: dict[str, Any] = field(default_factory=dict)              # the dry run's report
    maintenance: dict[str, Any] = field(default_factory=dict)       # the real run's report
    scan: dict[str, Any] = field(default_factory=dict)
    accepted: dict[str, Any] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)       # the audit after the change
    intruder_findings: list[dict[str, Any]] = field(default_factory=list)   # its scan's, about the intruder
    drift_after_cleanup: list[dict[str, Any]] | None = None
    collected: dict[str, Any] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)
    charts: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _say(console: Console, line: str, indent: int = 4) -> None:
    say(console, line, indent)


def _conn(dsn: str):
    from bvh_ops.pg.conn import connect

    conn = connect(dsn, autocommit=True)
    conn.execute("SET statement_timeout = '20s'")
    return conn


def _part(console: Console, result: OpsDemo, name: str, title: str, fn) -> Any:
    return run_part(console, result.failures, name, title, fn)


def ops_settings(settings: Settings, ops_dsn: str, now: datetime) -> Settings:
    """The demo's settings with the ops database, a maintenance window covering ``now`` (an hour
    either side, every day) and tight timeouts, so the real run acts now and stays short."""
    window = settings.maintenance.model_copy(update={
        "window_start": (now - timedelta(hours=1)).time().replace(second=0, microsecond=0),
        "window_end": (now + timedelta(hours=1)).time().replace(second=0, microsecond=0),
        "lock_timeout_ms": 2000, "statement_timeout_seconds": 20.0})
    security = settings.security.model_copy(update={"sensitive_columns": SENSITIVE, "app_roles": [INTRUDER]})
    return settings.model_copy(update={"ops_database_url": SecretStr(ops_dsn), "maintenance": window,
                                       "security": security})


def run_ops_steps(settings: Settings, ops_dsn: str | None, state: Path, console: Console
                  ) -> tuple[bool, list[tuple[str, str]], OpsDemo]:
    """The three steps; ``settings.database_url`` is the platform's database. (ok, summary rows
    [(name, text)], result)."""
    result = OpsDemo()
    if ops_dsn is None:
        result.failures.append("no ops database on the demo cluster")
        console.print("  [red]FAILED[/]: maintenance, security and capacity need the ops database 'bvh_ops'")
        row = "FAILED: no ops database"
        return False, [("maintenance", row), ("security", row), ("capacity", row)], result
    if settings.database_url is None:
        raise ValueError("the ops steps need database_url (the platform's database)")
    settings = ops_settings(settings, ops_dsn, datetime.now(UTC))
    rows = []
    before = len(result.failures)
    _part(console, result, "maintenance", f"maintenance: a bloated table engineered ({BLOATED}: {BLOAT_ROWS} rows, "
                                          "autovacuum off, all updated, half deleted); `bvh-ops maintain weekly "
                                          "--dry-run`, then the real run inside a window set to cover now",
          lambda: _maintenance(settings, result, console))
    rows.append(("maintenance", _maintenance_row(result) if len(result.failures) == before
                 else "FAILED: " + result.failures[-1]))
    before = len(result.failures)
    _part(console, result, "security", "security: `bvh-ops security scan` of the demo cluster; `security baseline "
                                       f"accept`; a change (role {INTRUDER} granted SELECT on {GRANTED_ON}); "
                                       "`security audit` shows the drift; cleaned up",
          lambda: _security(settings, result, console))
    rows.append(("security", _security_row(result) if len(result.failures) == before
                 else "FAILED: " + result.failures[-1]))
    before = len(result.failures)
    _part(console, result, "capacity", "capacity: `bvh-ops capacity collect` (backfilled from the demo's backups "
                                       "and the platform's tables) and `bvh-ops report capacity`, charts to the "
                                       "state dir",
          lambda: _capacity(settings, ops_dsn, state, result, console))
    rows.append(("capacity", _capacity_row(result) if len(result.failures) == before
                 else "FAILED: " + result.failures[-1]))
    return not result.failures, rows, result


# -- maintenance ------------------------------------------------------------------------------------------


def engineer_bloat(dsn: str) -> None:
    """A table autovacuum leaves alone, then every row updated and half deleted: dead tuples."""
    with _conn(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {BLOATED}")
        conn.execute(f"CREATE TABLE {BLOATED} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)")
        conn.execute(f"INSERT INTO {BLOATED} SELECT g, md5(g::text) FROM generate_series(1, {BLOAT_ROWS}) g")
        conn.execute(f"ANALYZE {BLOATED}")
        conn.execute(f"UPDATE {BLOATED} SET v = v || 'x'")
        conn.execute(f"DELETE FROM {BLOATED} WHERE id % 2 = 0")
        conn.execute("SELECT pg_stat_force_next_flush()")


def _maintenance(settings: Settings, result: OpsDemo, console: Console) -> None:
    from bvh_ops.maintenance.render import render
    from bvh_ops.maintenance.run import run_maintenance

    dsn = settings.require_database_url()
    engineer_bloat(dsn)
    try:
        result.plan = run_maintenance(settings, "weekly", dry_run=True)
        plan = result.plan["plan"]
        _say(console, f"bvh-ops maintain weekly --dry-run: the plan, {len(plan['actions'])} action(s), "
                      f"{len(result.plan['findings'])} finding(s); window {plan['window']}"
                      f"{'' if plan['in_window'] else ' (outside it now)'}; nothing changed:", 2)
        for a in plan["actions"]:
            _say(console, f"{a['action']:<13} {a['object']:<28} {a['reason']}")
        for f in result.plan["findings"]:
            _say(console, f"finding   {f['severity']:<9} {f['kind']:<20} {f['object']}: {f['detail']}")
        for n in result.plan["notes"]:
            _say(console, f"note      {n}")
        result.maintenance = report = run_maintenance(settings, "weekly")
        _say(console, "bvh-ops maintain weekly (window set to cover now):", 2)
        for line in render(report).splitlines():
            _say(console, line)
    finally:
        with _conn(dsn) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {BLOATED}")
    mine = [a for a in report["actions"] if a["object"] == BLOATED and a["action"].startswith("vacuum")]
    if not report["plan"]["in_window"]:
        raise RuntimeError(f"the run was outside its window ({report['plan']['window']})")
    if not mine or mine[0]["status"] != "done":
        raise RuntimeError(f"{BLOATED} was not vacuumed: {mine[0]['status'] + ': ' + mine[0]['detail'] if mine else 'not in the plan'}")
    b, a = mine[0]["before"] or {}, mine[0]["after"] or {}
    if not (b.get("dead_tuples", 0) > 0 and a.get("dead_tuples", 1) < b["dead_tuples"]):
        raise RuntimeError(f"{BLOATED}: dead tuples {b.get('dead_tuples')} -> {a.get('dead_tuples')}")
    if report["status"] == "failed":
        raise RuntimeError("an action failed: " + "; ".join(f"{x['action']} {x['object']}: {x['detail']}"
                                                            for x in report["actions"] if x["status"] == "failed"))


def _maintenance_row(result: OpsDemo) -> str:
    r = result.maintenance
    done = [a for a in r["actions"] if a["status"] == "done"]
    mine = next(a for a in done if a["object"] == BLOATED)
    return (f"OK: planned {len(r['plan']['actions'])} action(s) (dry run), {len(done)} done in the window; "
            f"{BLOATED} dead tuples {mine['before']['dead_tuples']} → {mine['after']['dead_tuples']} "
            f"({mine['seconds']:.2f} s); {len(r['findings'])} finding(s) reported")


# -- security ---------------------------------------------------------------------------------------------


def _drop_intruder(dsn: str) -> None:
    with _conn(dsn) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (INTRUDER,)).fetchone():
            conn.execute(f"DROP OWNED BY {INTRUDER}")      # its grants in this database
            conn.execute(f"DROP ROLE {INTRUDER}")


def _security(settings: Settings, result: OpsDemo, console: Console) -> None:
    from bvh_ops.security.run import accept_baseline, audit, scan

    dsn = settings.require_database_url()
    _drop_intruder(dsn)      # a run interrupted before its cleanup left it behind
    result.scan = doc = scan(settings)
    c = doc["counts"]
    _say(console, f"bvh-ops security scan: {doc['status']}: {doc['checked']} checks run, "
                  f"{len(doc['not_checked'])} not checked; " + ", ".join(f"{c[s]} {s}" for s in c), 2)
    for f in doc["findings"][:TOP_FINDINGS]:
        cis = f" (CIS {f['cis']})" if f["cis"] else ""
        _say(console, f"{f['severity'].upper():<8} {f['id']}{cis} {f['title']}: {f['evidence']}")
        _say(console, f"         fix: {f['remediation']}")
    if len(doc["findings"]) > TOP_FINDINGS:
        _say(console, f"… and {len(doc['findings']) - TOP_FINDINGS} more (bvh-ops security scan lists them all)")
    for n in doc["not_checked"]:
        _say(console, f"NOT CHECKED {n['id']}: {n['reason']}")

    result.accepted = acc = accept_baseline(settings)
    _say(console, f"bvh-ops security baseline accept: {acc['key']} (sha256 {acc['sha256'][:16]}…, host key "
                  f"{acc['signed_by']}, by {acc['accepted_by']}){'' if acc['audited'] else '; AUDIT TRAIL NOT WRITTEN'}",
         2)
    try:
        with _conn(dsn) as conn:
            conn.execute(f"CREATE ROLE {INTRUDER} LOGIN")
            conn.execute(f"GRANT SELECT ON {GRANTED_ON} TO {INTRUDER}")
        _say(console, f"the change: CREATE ROLE {INTRUDER} LOGIN; GRANT SELECT ON {GRANTED_ON} TO {INTRUDER}", 2)
        doc = audit(settings)
        result.drift = doc["drift"] or []
        _say(console, f"bvh-ops security audit: drift against {doc['baseline']['key']}: {len(result.drift)} "
                      "change(s)" if doc["baseline"] else "bvh-ops security audit: NO BASELINE", 2)
        for d in result.drift:
            _say(console, f"{d['change']:<8} {d['section']} {d['object']}: {d['before']!r} -> {d['after']!r}")
        result.intruder_findings = new = [f for f in doc["findings"]
                                          if INTRUDER in f["object"] or INTRUDER in f["evidence"]]
        for f in new:
            _say(console, f"and in its scan: {f['severity'].upper()} {f['id']} {f['title']}: {f['evidence']}")
    finally:
        _drop_intruder(dsn)
    after = audit(settings)
    result.drift_after_cleanup = after["drift"]
    _say(console, f"cleaned up (DROP OWNED BY {INTRUDER}; DROP ROLE {INTRUDER}): the audit's drift is now "
                  f"{len(after['drift'] or [])} change(s)", 2)
    objects = {(d["section"], d["object"]) for d in result.drift}
    granted = any(d["section"] == "grants" and INTRUDER in str(d["after"]) for d in result.drift)
    if ("roles", INTRUDER) not in objects or not granted:
        raise RuntimeError(f"the audit did not show the new role and its grant: {sorted(objects)}")
    if after["drift"]:
        raise RuntimeError(f"drift left after the cleanup: {after['drift']}")


def _security_row(result: OpsDemo) -> str:
    c = result.scan["counts"]
    return (f"OK: scan {result.scan['checked']} checks, " + ", ".join(f"{c[s]} {s}" for s in c if c[s])
            + f", {len(result.scan['not_checked'])} not checked; baseline accepted; drift after the change: "
              f"{len(result.drift)} ({', '.join(sorted({d['section'] for d in result.drift}))}), and "
              f"{sum(f['id'] == 'PG-DATA-001' for f in result.intruder_findings)} sensitive column(s) readable by "
              f"{INTRUDER} (PG-DATA-001); clean after cleanup")


# -- capacity ---------------------------------------------------------------------------------------------


def _capacity(settings: Settings, ops_dsn: str, state: Path, result: OpsDemo, console: Console) -> None:
    from rich.table import Table

    from bvh_ops.capacity.collect import collect
    from bvh_ops.capacity.report import charts, human, report_parts
    from bvh_ops.opsdb.migrations import migrate

    now = datetime.now(UTC)
    with _conn(ops_dsn) as conn:
        migrate(conn)
        got = collect(settings, conn, now=now)
        result.collected = got.to_json()
        _say(console, f"bvh-ops capacity collect: {len(got.samples)} series for {got.day}; {got.backfilled} "
                      "point(s) of history backfilled (repository listing, created_at columns)", 2)
        if not got.complete:       # a measure that could not run fails the step, as it fails the flow
            raise RuntimeError(got.incomplete_line())
        doc, forecasts, history = report_parts(settings, conn, now)
    result.capacity = doc
    if not doc["resources"]:
        raise RuntimeError("the capacity report has no resource")
    table = Table(title=f"bvh-ops report capacity ({doc['generated_at'][:10]}): the resources with a limit",
                  title_justify="left")
    for col in ("resource", "current", "limit", "growth/month", "days until", "status", "reason"):
        table.add_column(col, overflow="fold")
    order = {"critical": 0, "warning": 1, "unpredictable": 2, "ok": 3}
    ranked = sorted(doc["resources"], key=lambda r: (order[r["status"]], r["limit"] is None, r["name"]))
    shown = [r for r in ranked if r["limit"] is not None][:8] or ranked[:8]
    for r in shown:
        u = r["days_until"]
        span = "-" if u is None else "-".join("…" if u[k] is None else f"{u[k]:.0f}" for k in ("low", "expected", "high"))
        table.add_row(r["name"], human(r["current"], r["unit"]), human(r["limit"], r["unit"]),
                      human(r["growth_per_month"], r["unit"]), span, r["status"], r["reason"])
    console.print(table)
    if len(doc["resources"]) > len(shown):
        _say(console, f"… and {len(doc['resources']) - len(shown)} more resource(s) without a limit (table sizes, row "
                      "counts, business drivers): bvh-ops report capacity lists them all", 2)
    for line in doc.get("recommendations") or []:
        _say(console, "recommendation: " + line, 2)
    out = state / CHARTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, png in charts(doc, forecasts, history).items():
        path = out / ("".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name) + ".png")
        path.write_bytes(png)
        result.charts.append(path)
    _say(console, f"charts ({len(result.charts)}):", 2)
    for path in result.charts:
        _say(console, str(path))


def _capacity_row(result: OpsDemo) -> str:
    statuses: dict[str, int] = {}
    for r in result.capacity["resources"]:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return (f"OK: {len(result.collected['samples'])} series collected, {result.collected['backfilled']} backfilled; "
            f"report: {len(result.capacity['resources'])} resources ("
            + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + f"); {len(result.charts)} charts in "
            + (str(result.charts[0].parent) if result.charts else "-"))
