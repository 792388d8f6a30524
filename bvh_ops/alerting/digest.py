"""The daily info digest's body (issue #12, the runbook's info list): the window's backups and
their checks, DR drills (pass, RTO/RPO against the objectives), incidents, alerts fired, uptime
per service, and the business figures (registrations, tickets sold, revenue) with a trend against
the 24 hours before.

``render_digest`` is pure: facts in, lines out. A section whose source could not be read says so
and why, never "none" or "0": unknown is not zero, and a check that could not run is reported as
not verified, never as passed. ``gather_digest`` reads the facts, each source on its own (a
repository that cannot be read still leaves the drills, the incidents and the business figures),
read-only, each query under a statement timeout, and no note carries a DSN or a password.

Revenue is ticket sales, ``sum(tickets.price)`` over the tickets bought in the window: what the
platform's own ``daily_ticket_sales`` view calls revenue. Payments are deposits (the players' money
in their wallets), not revenue; prizes paid are not subtracted (that is gross gaming revenue, a
finance figure the runbook does not ask for).

Security: each security scan and audit that finished in the window (ops.security_runs), its
status and its unwaived findings per severity; none finished is said, not left out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import psycopg

from bvh_ops.config import Settings
from bvh_ops.dsn import scrub
from bvh_ops.errors import BvhOpsError
from bvh_ops.monitoring.report import cycle_rows, uptime_report
from bvh_ops.monitoring.results import Status
from bvh_ops.pg.conn import connect
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import BackupRecord, Repository, backup_prefix
from bvh_ops.results import CheckResult, CheckStatus

log = logging.getLogger("bvh_ops.alerting.digest")

SECTIONS = ("Backups", "Drills", "Incidents", "Alerts", "Uptime", "Security", "Business")
SECURITY_SEVERITIES = ("critical", "high", "medium", "low", "info")  # bvh_ops.security.model's
SEVERITIES = ("critical", "warning", "info")
# Every digest query runs under this (a seq scan of a huge table must not hold the engine up).
STATEMENT_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 5
INDENT = "  "

T = TypeVar("T")


# -- facts ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupFact:
    backup_id: str
    kind: str
    status: str                          # complete | incomplete | damaged (BackupRecord.status)
    finished_at: datetime | None         # None unless complete
    size_bytes: int | None               # bytes stored in the repository; None when unknown
    checks: tuple[CheckResult, ...] = ()  # what the digest could check without reading data

    def count(self, status: CheckStatus) -> int:
        return sum(c.status is status for c in self.checks)


@dataclass(frozen=True)
class DrillFact:
    drill_id: str
    finished_at: datetime
    passed: bool
    rto_seconds: float | None            # None: the drill did not get as far as measuring it
    rpo_seconds: float | None
    rto_objective_seconds: float
    rpo_objective_seconds: float
    mode: str = ""


@dataclass(frozen=True)
class IncidentFact:
    name: str
    service: str
    started_at: datetime
    ended_at: datetime | None            # None: still open


@dataclass(frozen=True)
class Figure:
    """One business number in the window and in the same span just before it (the trend)."""

    value: int | Decimal
    previous: int | Decimal


@dataclass(frozen=True)
class Business:
    registrations: Figure | None         # new users; None when it could not be counted
    tickets: Figure | None               # tickets bought
    revenue: Figure | None               # ticket sales, sum(tickets.price)


@dataclass(frozen=True)
class Note:
    """Why (part of) a section could not be gathered; never holds a secret."""

    section: str                         # one of SECTIONS
    reason: str

    def __str__(self) -> str:
        return f"{self.section}: {self.reason}"


@dataclass(frozen=True)
class SecurityFact:
    kind: str                  # scan | audit | baseline
    finished_at: datetime
    status: str                # passed | warning | failed
    counts: Mapping[str, int]  # unwaived findings per severity
    not_checked: int


@dataclass(frozen=True)
class PerformanceFact:
    endpoint: str
    samples: int
    avg_ms: float
    p95_ms: float
    max_ms: float


@dataclass(frozen=True)
class DigestFacts:
    """Everything the digest reports; ``None`` in a field = its source could not be read (the
    reason is in ``notes``), an empty collection = read, and nothing happened."""

    backups: tuple[BackupFact, ...] | None = None
    drills: tuple[DrillFact, ...] | None = None
    incidents: tuple[IncidentFact, ...] | None = None
    alerts_fired: Mapping[str, int] | None = None      # severity -> alerts fired in the window
    uptime: Mapping[str, float | None] | None = None   # service -> percent (None: no up/down cycle)
    performance: tuple[PerformanceFact, ...] | None = None   # per endpoint: response times in the window
    security: tuple[SecurityFact, ...] | None = None   # security scans and audits finished in the window
    business: Business | None = None
    notes: tuple[Note, ...] = field(default_factory=tuple)


# -- rendering (pure) ----------------------------------------------------------------------

def render_digest(facts: DigestFacts, start: datetime, end: datetime) -> list[str]:
    """The digest's body: one header line per section (``SECTIONS``), its items indented below."""
    lines = [f"Daily summary {_when(start)} - {_when(end)}"]
    sections: list[tuple[str, Any, Callable[[Any, datetime], list[str]]]] = [
        ("Backups", facts.backups, _backup_lines),
        ("Drills", facts.drills, _drill_lines),
        ("Incidents", facts.incidents, _incident_lines),
        ("Alerts", facts.alerts_fired, _alert_lines),
        ("Uptime", facts.uptime, _uptime_lines),
        ("Performance", facts.performance, _performance_lines),
        ("Security", facts.security, _security_lines),
        ("Business", facts.business, _business_lines),
    ]
    for title, value, render in sections:
        lines.append(title)
        if value is None:
            lines.append(INDENT + _unknown(facts.notes, title))
            continue
        lines += [INDENT + line for line in render(value, end)]
        # parts of a section read while others failed (a business figure, say)
        lines += [INDENT + f"note: {n.reason}" for n in facts.notes if n.section == title]
    return lines


def _unknown(notes: Sequence[Note], section: str) -> str:
    reasons = [n.reason for n in notes if n.section == section]
    return f"UNKNOWN: could not be read ({'; '.join(reasons) or 'no reason recorded'})"


def _backup_lines(backups: Sequence[BackupFact], _end: datetime) -> list[str]:
    if not backups:
        return ["no backup finished in the window"]
    out = []
    for b in backups:
        size = "size unknown" if b.size_bytes is None else f"{human_size(b.size_bytes)} stored"
        if b.status == "complete":
            head = f"{b.backup_id} ({b.kind}) finished {_when(b.finished_at)}, {size}"
        elif b.status == "incomplete":
            head = f"{b.backup_id} ({b.kind}) INCOMPLETE: never committed (still running or abandoned), {size}"
        else:
            head = f"{b.backup_id} DAMAGED: no readable manifest"
        out.append(head + ("; " + _checks_text(b) if b.checks else ""))
    return out


def _checks_text(b: BackupFact) -> str:
    counts = (f"checks: {b.count(CheckStatus.PASSED)} passed, {b.count(CheckStatus.FAILED)} failed, "
              f"{b.count(CheckStatus.NOT_VERIFIED)} not verified")
    why = [f"{c.name} {'FAILED' if c.status is CheckStatus.FAILED else 'not verified'}: {c.detail}"
           for c in b.checks if c.status is not CheckStatus.PASSED]
    return counts + (f" ({'; '.join(why)})" if why else "")


def _drill_lines(drills: Sequence[DrillFact], _end: datetime) -> list[str]:
    if not drills:
        return ["no drill finished in the window"]
    out = []
    for d in drills:
        verdict = "PASSED" if d.passed else "FAILED"
        mode = f" ({d.mode})" if d.mode else ""
        out.append(f"{d.drill_id}{mode} finished {_when(d.finished_at)}: {verdict}, "
                   f"{_objective('RTO', d.rto_seconds, d.rto_objective_seconds)}, "
                   f"{_objective('RPO', d.rpo_seconds, d.rpo_objective_seconds)}")
    return out


def _objective(name: str, seconds: float | None, objective: float) -> str:
    if seconds is None:
        return f"{name} not measured (objective {duration(objective)})"
    verdict = "met" if seconds <= objective else "MISSED"
    return f"{name} {duration(seconds)} (objective {duration(objective)}: {verdict})"


def _incident_lines(incidents: Sequence[IncidentFact], end: datetime) -> list[str]:
    if not incidents:
        return ["no incident in the window"]
    out = []
    for i in incidents:
        if i.ended_at is None:
            out.append(f"{i.name} on {i.service}: since {_when(i.started_at)}, STILL OPEN "
                       f"({duration((end - i.started_at).total_seconds())} at the end of the window)")
        else:
            out.append(f"{i.name} on {i.service}: {_when(i.started_at)} - {_when(i.ended_at)} "
                       f"({duration((i.ended_at - i.started_at).total_seconds())})")
    return out


def _alert_lines(fired: Mapping[str, int], _end: datetime) -> list[str]:
    counts = ", ".join(f"{fired.get(s, 0)} {s}" for s in SEVERITIES)
    others = ", ".join(f"{n} {s}" for s, n in sorted(fired.items()) if s not in SEVERITIES)
    return [f"fired in the window: {counts}" + (f", {others}" if others else "")]


def _uptime_lines(uptime: Mapping[str, float | None], _end: datetime) -> list[str]:
    if not uptime:
        return ["no probe samples in the window (was `bvh-ops monitor` running?)"]
    return [f"{service}: {'no up/down cycle (could not check)' if pct is None else f'{pct:.3f} %'}"
            for service, pct in sorted(uptime.items())]


def _performance_lines(perf: Sequence[PerformanceFact], _end: datetime) -> list[str]:
    if not perf:
        return ["no response-time samples in the window (no endpoint probed, or `bvh-ops monitor` not running)"]
    return [f"{p.endpoint}: avg {p.avg_ms:,.0f} ms, p95 {p.p95_ms:,.0f} ms, max {p.max_ms:,.0f} ms "
            f"({p.samples:,} probes)" for p in perf]


def _security_lines(runs: Sequence[SecurityFact], _end: datetime) -> list[str]:
    if not runs:
        return ["no security scan or audit finished in the window"]
    out = []
    for r in runs:
        found = ", ".join(f"{r.counts.get(sev, 0)} {sev}" for sev in SECURITY_SEVERITIES)
        out.append(f"{r.kind} finished {_when(r.finished_at)}: {r.status.upper()}, findings {found}"
                   + (f", {r.not_checked} not checked" if r.not_checked else ""))
    return out


def _business_lines(b: Business, _end: datetime) -> list[str]:
    return [_figure("registrations", b.registrations, "{:,}"),
            _figure("tickets sold", b.tickets, "{:,}"),
            _figure("revenue (ticket sales)", b.revenue, "{:,.2f}")]


def _figure(label: str, f: Figure | None, fmt: str) -> str:
    if f is None:
        return f"{label}: UNKNOWN (could not be counted, see the note below)"
    return f"{label}: {fmt.format(f.value)} (previous 24 h: {fmt.format(f.previous)}, {trend(f.value, f.previous)})"


def trend(value: int | Decimal, previous: int | Decimal) -> str:
    """'up 12.5 %', 'down 3.0 %', 'unchanged', 'up from 0'."""
    if value == previous:
        return "unchanged"
    if previous == 0:
        return "up from 0"
    pct = abs(Decimal(value) - Decimal(previous)) * 100 / abs(Decimal(previous))
    return f"{'up' if value > previous else 'down'} {pct:.1f} %"


def human_size(n: int) -> str:
    """Bytes in binary units: '512 B', '1.5 KiB', '12.3 MiB', '2.0 GiB'."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """'42 s', '3 min 5 s', '2 h 5 min', '1 d 3 h'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 // 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 // 3600 else f"{s // 86400} d"


def _when(at: datetime | None) -> str:
    return "?" if at is None else f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def window_uptime(rows: Sequence[tuple[datetime, str, Status | str]], start: datetime, end: datetime,
                  windows: Sequence[Any] = ()) -> dict[str, float | None]:
    """Uptime percent per service over [start, end) with the monthly report's semantics
    (``monitoring.report.uptime_report``: critical down, ok/warning up, unknown neither, cycles in
    a maintenance window excluded). A window spanning a month boundary is counted per month and
    summed."""
    inside = [r for r in rows if start <= _utc(r[0]) < end]
    months = sorted({f"{start:%Y-%m}", f"{end - timedelta(microseconds=1):%Y-%m}"})
    up: dict[str, int] = {}
    down: dict[str, int] = {}
    for month in months:
        for service, s in uptime_report(inside, month, windows)["services"].items():
            up[service] = up.get(service, 0) + s["up"]
            down[service] = down.get(service, 0) + s["down"]
    return {svc: None if up[svc] + down[svc] == 0 else round(100.0 * up[svc] / (up[svc] + down[svc]), 3)
            for svc in sorted(up)}


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# -- gathering -----------------------------------------------------------------------------

class _Unavailable(Exception):
    """A source that is not configured or not running: its message is the note."""


# What a source may raise when it cannot be read; anything else is a bug and propagates.
_SOURCE_ERRORS = (_Unavailable, BvhOpsError, psycopg.Error, OSError)


def gather_digest(settings: Settings, start: datetime, end: datetime, *, ops_dsn: str | None) -> DigestFacts:
    """The facts of [start, end): backups from the repository (manifests and listings only, never
    data), drills, incidents, alerts and uptime from the ops database at ``ops_dsn`` (None: not
    running), business figures from the platform database. A failing source becomes a note."""
    notes: list[Note] = []
    backups = _isolated(notes, "Backups", lambda: _backups(settings, start, end))
    ops: dict[str, Any] = {}
    if ops_dsn is None:
        notes += [Note(s, "ops database not running") for s in ("Drills", "Incidents", "Alerts", "Uptime",
                                                                 "Security")]
    else:
        ops = _ops_facts(settings, ops_dsn, start, end, notes)
    return DigestFacts(backups=backups, drills=ops.get("Drills"), incidents=ops.get("Incidents"),
                       alerts_fired=ops.get("Alerts"), uptime=ops.get("Uptime"), performance=ops.get("Performance"),
                       security=ops.get("Security"),
                       business=_business(settings, start, end, notes), notes=tuple(notes))


def _isolated(notes: list[Note], section: str, read: Callable[[], T], dsn: str | None = None) -> T | None:
    """``read()``, or None with a note saying why (secrets scrubbed) when its source failed."""
    try:
        return read()
    except _SOURCE_ERRORS as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if dsn:
            text = scrub(text, dsn)
        log.warning("digest: %s not gathered: %s", section, text)
        notes.append(Note(section, text))
        return None


@contextmanager
def _read_only(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit (a failed query does not poison the next), read-only connection whose every
    statement is bounded by STATEMENT_TIMEOUT_MS."""
    with connect(dsn, autocommit=True, timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        conn.execute("SET default_transaction_read_only = on")
        yield conn


def _backups(settings: Settings, start: datetime, end: datetime) -> tuple[BackupFact, ...]:
    if not settings.repository:
        raise _Unavailable("repository is not set")
    repo, _ = open_repository(settings)
    out = []
    for rec in repo.list_backups():
        if rec.status == "complete":
            if rec.finished_at is None or not start <= _utc(rec.finished_at) < end:
                continue
            out.append(BackupFact(rec.backup_id, rec.kind, rec.status, _utc(rec.finished_at), rec.bytes_stored,
                                  _repository_checks(repo, rec)))
        elif rec.last_modified is not None and start <= _utc(rec.last_modified) < end:
            size = rec.bytes_stored if rec.status == "incomplete" else None
            out.append(BackupFact(rec.backup_id, rec.kind, rec.status, None, size))
    return tuple(sorted(out, key=lambda b: (b.finished_at or end, b.backup_id)))


def _repository_checks(repo: Repository, rec: BackupRecord) -> tuple[CheckResult, ...]:
    """What can be checked from the manifest and a listing: the signature, every object present
    at its manifest size. The stored sha256 needs the data read: not verified here."""
    sha = CheckResult("stored sha256", CheckStatus.NOT_VERIFIED,
                      "the digest reads no backup data: run `bvh-ops verify`")
    if not rec.signature_ok:
        return (CheckResult("signature", CheckStatus.FAILED, "manifest not signed by a trusted host key"),
                CheckResult("objects present", CheckStatus.NOT_VERIFIED, "untrusted manifest"), sha)
    signature = CheckResult("signature", CheckStatus.PASSED, "signed by a trusted host key")
    try:
        objects = repo.load_manifest(rec.backup_id).manifest.objects
        prefix = backup_prefix(rec.backup_id)
        listed = {info.key: info.size for info in repo.store.list(prefix)}
    except BvhOpsError as exc:
        return signature, CheckResult("objects present", CheckStatus.NOT_VERIFIED, f"listing failed: {exc}"), sha
    bad = [o.name for o in objects if listed.get(prefix + o.stored) != o.stored_size]
    present = (CheckResult("objects present", CheckStatus.FAILED,
                           f"{len(bad)} of {len(objects)} missing or of the wrong size: {', '.join(bad[:5])}")
               if bad else CheckResult("objects present", CheckStatus.PASSED,
                                       f"{len(objects)} object(s) at their manifest sizes"))
    return signature, present, sha


def _ops_facts(settings: Settings, dsn: str, start: datetime, end: datetime, notes: list[Note]) -> dict[str, Any]:
    sections = ("Drills", "Incidents", "Alerts", "Uptime", "Performance", "Security")
    try:
        with _read_only(dsn) as conn:
            readers: dict[str, Callable[[], Any]] = {
                "Drills": lambda: _drills(conn, start, end),
                "Incidents": lambda: _incidents(conn, start, end),
                "Alerts": lambda: _alerts(conn, start, end),
                "Uptime": lambda: window_uptime(cycle_rows(conn, start, end), start, end,
                                                settings.maintenance_windows),
                "Performance": lambda: _performance(conn, [ep.name for ep in settings.endpoints], start, end),
                "Security": lambda: _security(conn, start, end),
            }
            return {s: _isolated(notes, s, readers[s], dsn) for s in sections}
    except _SOURCE_ERRORS as exc:
        reason = scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0], dsn)
        notes += [Note(s, f"ops database: {reason}") for s in sections]
        return {}


def _performance(conn: psycopg.Connection, endpoints: Sequence[str], start: datetime,
                 end: datetime) -> tuple[PerformanceFact, ...]:
    """Response times of the configured endpoints from the raw samples (ms; unanswered probes
    have no value and are not counted)."""
    rows = conn.execute(
        "SELECT name, count(*), avg(value), percentile_cont(0.95) WITHIN GROUP (ORDER BY value), max(value) "
        "FROM ops.samples WHERE at >= %s AND at < %s AND name = ANY(%s) AND value IS NOT NULL "
        "GROUP BY name ORDER BY name", (start, end, list(endpoints))).fetchall()
    return tuple(PerformanceFact(name, n, float(avg), float(p95), float(mx)) for name, n, avg, p95, mx in rows)


def _security(conn: psycopg.Connection, start: datetime, end: datetime) -> tuple[SecurityFact, ...]:
    if conn.execute("SELECT to_regclass('ops.security_runs')").fetchone()[0] is None:
        return ()  # never migrated to security: no run at all
    rows = conn.execute(
        "SELECT kind, finished_at, status, counts, not_checked FROM ops.security_runs "
        "WHERE finished_at >= %s AND finished_at < %s ORDER BY finished_at, run_id", (start, end)).fetchall()
    return tuple(SecurityFact(k, f, st, dict(c or {}), n or 0) for k, f, st, c, n in rows)


def _drills(conn: psycopg.Connection, start: datetime, end: datetime) -> tuple[DrillFact, ...]:
    rows = conn.execute(
        "SELECT drill_id, finished_at, passed, rto_seconds, rpo_seconds, rto_objective_seconds, "
        "rpo_objective_seconds, mode FROM ops.drills WHERE finished_at >= %s AND finished_at < %s "
        "ORDER BY finished_at, drill_id", (start, end)).fetchall()
    return tuple(DrillFact(*row) for row in rows)


def _incidents(conn: psycopg.Connection, start: datetime, end: datetime) -> tuple[IncidentFact, ...]:
    rows = conn.execute(
        "SELECT name, service, started_at, ended_at FROM ops.incidents "
        "WHERE started_at < %s AND (ended_at IS NULL OR ended_at >= %s) ORDER BY started_at, id",
        (end, start)).fetchall()
    return tuple(IncidentFact(*row) for row in rows)


def _alerts(conn: psycopg.Connection, start: datetime, end: datetime) -> dict[str, int]:
    rows = conn.execute(
        "SELECT severity, count(*) FROM ops.alert_events WHERE kind = 'fired' AND at >= %s AND at < %s "
        "GROUP BY severity", (start, end)).fetchall()
    return {**dict.fromkeys(SEVERITIES, 0), **{sev: int(n) for sev, n in rows}}


# The platform's figures in the window and in the span before it, one scan each. The sample
# schema (demo/schema.sql) and the real platform share these tables and columns.
REGISTRATIONS_SQL = (
    "SELECT count(*) FILTER (WHERE created_at >= %(start)s), count(*) FILTER (WHERE created_at < %(start)s) "
    "FROM users WHERE created_at >= %(before)s AND created_at < %(end)s")
TICKETS_SQL = (
    "SELECT count(*) FILTER (WHERE purchased_at >= %(start)s), count(*) FILTER (WHERE purchased_at < %(start)s), "
    "coalesce(sum(price) FILTER (WHERE purchased_at >= %(start)s), 0), "
    "coalesce(sum(price) FILTER (WHERE purchased_at < %(start)s), 0) "
    "FROM tickets WHERE purchased_at >= %(before)s AND purchased_at < %(end)s")


def _business(settings: Settings, start: datetime, end: datetime, notes: list[Note]) -> Business | None:
    if settings.database_url is None:
        notes.append(Note("Business", "database_url is not set"))
        return None
    dsn = settings.database_url.get_secret_value()
    params = {"start": start, "end": end, "before": start - (end - start)}
    try:
        with _read_only(dsn) as conn:
            reg = _isolated(notes, "Business", lambda: conn.execute(REGISTRATIONS_SQL, params).fetchone(), dsn)
            tix = _isolated(notes, "Business", lambda: conn.execute(TICKETS_SQL, params).fetchone(), dsn)
    except _SOURCE_ERRORS as exc:
        notes.append(Note("Business", "platform database: "
                          + scrub((str(exc).strip().splitlines() or [type(exc).__name__])[0], dsn)))
        return None
    return Business(registrations=None if reg is None else Figure(int(reg[0]), int(reg[1])),
                    tickets=None if tix is None else Figure(int(tix[0]), int(tix[1])),
                    revenue=None if tix is None else Figure(Decimal(tix[2]), Decimal(tix[3])))
