"""The daily digest's body (pure): figures formatted, an unreadable source says so (never "none" or
"0"), trends, checks that could not run are never passing; and routing carrying the body."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from bvh_ops.alerting.digest import (
    SECTIONS,
    BackupFact,
    Business,
    DigestFacts,
    DrillFact,
    Figure,
    IncidentFact,
    Note,
    SecurityFact,
    duration,
    human_size,
    render_digest,
    trend,
    window_uptime,
)
from bvh_ops.alerting.routing import digest_key, digest_window, due
from bvh_ops.alerting.rules import Severity, fingerprint
from bvh_ops.alerting.state import Alert, Event
from bvh_ops.monitoring.results import Status
from bvh_ops.results import CheckResult, CheckStatus

END = datetime(2026, 1, 6, 7, 0, tzinfo=UTC)
START = END - timedelta(days=1)
PASS, FAIL, NOTV = CheckStatus.PASSED, CheckStatus.FAILED, CheckStatus.NOT_VERIFIED


def backup(backup_id="20260106T020000Z-logical-abc123", size=12_900_000, checks=(PASS, PASS, NOTV), **kw):
    values = dict(kind="logical", status="complete", finished_at=START + timedelta(hours=19, minutes=3),
                  size_bytes=size, checks=tuple(CheckResult(f"check{i}", s, f"why{i}") for i, s in enumerate(checks)))
    values.update(kw)
    return BackupFact(backup_id, **values)


FULL = DigestFacts(
    backups=(backup(),),
    drills=(DrillFact("drill-1", START + timedelta(hours=20), True, 83.0, 300.0, 4 * 3600.0, 3600.0, "logical"),),
    security=(SecurityFact("scan", START + timedelta(hours=21), "failed",
                           {"critical": 1, "high": 0, "medium": 2, "low": 0, "info": 3}, 1),),
    incidents=(IncidentFact("system down", "api", START + timedelta(hours=3), START + timedelta(hours=3, minutes=12)),
               IncidentFact("database down", "database", START + timedelta(hours=22), None)),
    alerts_fired={"critical": 2, "warning": 5, "info": 0},
    uptime={"api": 99.1666, "database": None},
    business=Business(Figure(12, 9), Figure(1204, 1300), Figure(Decimal("7103.60"), Decimal("7103.60"))),
)


def section(lines, title):
    """The indented lines under ``title``."""
    i = lines.index(title)
    out = []
    for line in lines[i + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out


def test_every_section_has_a_header_in_order():
    lines = render_digest(FULL, START, END)
    assert lines[0] == "Daily summary 2026-01-05 07:00 UTC - 2026-01-06 07:00 UTC"
    assert [line for line in lines if line in SECTIONS] == list(SECTIONS)
    assert section(render_digest(DigestFacts(security=()), START, END), "Security") == [
        "no security scan or audit finished in the window"]


def test_figures_are_formatted():
    lines = render_digest(FULL, START, END)
    (b,) = section(lines, "Backups")
    assert b.startswith("20260106T020000Z-logical-abc123 (logical) finished 2026-01-06 02:03 UTC, 12.3 MiB stored")
    assert "checks: 2 passed, 0 failed, 1 not verified (check2 not verified: why2)" in b
    (d,) = section(lines, "Drills")
    assert d == ("drill-1 (logical) finished 2026-01-06 03:00 UTC: PASSED, RTO 1 min 23 s (objective 4 h: met), "
                 "RPO 5 min (objective 1 h: met)")
    assert section(lines, "Incidents") == [
        "system down on api: 2026-01-05 10:00 UTC - 2026-01-05 10:12 UTC (12 min)",
        "database down on database: since 2026-01-06 05:00 UTC, STILL OPEN (2 h at the end of the window)"]
    assert section(lines, "Alerts") == ["fired in the window: 2 critical, 5 warning, 0 info"]
    assert section(lines, "Uptime") == ["api: 99.167 %", "database: no up/down cycle (could not check)"]
    assert section(lines, "Security") == [
        "scan finished 2026-01-06 04:00 UTC: FAILED, findings 1 critical, 0 high, 2 medium, 0 low, 3 info, "
        "1 not checked"]
    assert section(lines, "Business") == [
        "registrations: 12 (previous 24 h: 9, up 33.3 %)",
        "tickets sold: 1,204 (previous 24 h: 1,300, down 7.4 %)",
        "revenue (ticket sales): 7,103.60 (previous 24 h: 7,103.60, unchanged)"]


def test_unknown_sources_say_so_and_why_never_none_or_zero():
    facts = DigestFacts(notes=(Note("Backups", "cannot read the repository: permission denied"),
                               *(Note(s, "ops database not running") for s in ("Drills", "Incidents", "Alerts",
                                                                               "Uptime", "Security"))))
    lines = render_digest(facts, START, END)
    for title in SECTIONS:
        (only,) = section(lines, title)
        assert only.startswith("UNKNOWN: could not be read (")
    assert section(lines, "Backups") == ["UNKNOWN: could not be read (cannot read the repository: permission denied)"]
    assert section(lines, "Alerts") == ["UNKNOWN: could not be read (ops database not running)"]
    assert section(lines, "Business") == ["UNKNOWN: could not be read (no reason recorded)"]
    assert not any(w in " ".join(lines) for w in ("no backup", "no incident", "fired in the window: 0"))


def test_known_empty_sections_read_as_nothing_happened():
    lines = render_digest(DigestFacts(backups=(), drills=(), incidents=(), alerts_fired={}, uptime={}), START, END)
    assert section(lines, "Backups") == ["no backup finished in the window"]
    assert section(lines, "Drills") == ["no drill finished in the window"]
    assert section(lines, "Incidents") == ["no incident in the window"]
    assert section(lines, "Alerts") == ["fired in the window: 0 critical, 0 warning, 0 info"]
    assert section(lines, "Uptime") == ["no probe samples in the window (was `bvh-ops monitor` running?)"]


def test_one_business_figure_unknown_keeps_the_others():
    facts = DigestFacts(business=Business(None, Figure(3, 0), Figure(Decimal("17.70"), Decimal(0))),
                        notes=(Note("Business", 'relation "users" does not exist'),))
    assert section(render_digest(facts, START, END), "Business") == [
        "registrations: UNKNOWN (could not be counted, see the note below)",
        "tickets sold: 3 (previous 24 h: 0, up from 0)",
        "revenue (ticket sales): 17.70 (previous 24 h: 0.00, up from 0)",
        'note: relation "users" does not exist']


def test_failed_and_unverified_checks_are_never_reported_as_passing():
    (line,) = section(render_digest(DigestFacts(backups=(backup(checks=(FAIL, NOTV, NOTV)),)), START, END),
                      "Backups")
    assert "checks: 0 passed, 1 failed, 2 not verified" in line
    assert "check0 FAILED: why0" in line and "check1 not verified: why1" in line


def test_incomplete_and_damaged_backups_are_named():
    facts = DigestFacts(backups=(backup("b-inc", status="incomplete", finished_at=None, size=2048, checks=()),
                                 backup("b-dmg", status="damaged", finished_at=None, size=None, checks=())))
    assert section(render_digest(facts, START, END), "Backups") == [
        "b-inc (logical) INCOMPLETE: never committed (still running or abandoned), 2.0 KiB stored",
        "b-dmg DAMAGED: no readable manifest"]


def test_failed_drill_and_missed_objectives():
    facts = DigestFacts(drills=(DrillFact("d2", START, False, 5 * 3600.0, None, 4 * 3600.0, 3600.0),))
    assert section(render_digest(facts, START, END), "Drills") == [
        "d2 finished 2026-01-05 07:00 UTC: FAILED, RTO 5 h (objective 4 h: MISSED), RPO not measured (objective 1 h)"]


@pytest.mark.parametrize("value, previous, expected", [
    (12, 9, "up 33.3 %"), (9, 12, "down 25.0 %"), (5, 5, "unchanged"), (0, 0, "unchanged"),
    (4, 0, "up from 0"), (0, 4, "down 100.0 %"), (Decimal("10.50"), Decimal("7.00"), "up 50.0 %"),
])
def test_trend(value, previous, expected):
    assert trend(value, previous) == expected


@pytest.mark.parametrize("n, expected", [
    (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (12_900_000, "12.3 MiB"), (3 * 1024**3, "3.0 GiB"),
    (5 * 1024**5, "5.0 PiB"),
])
def test_human_size(n, expected):
    assert human_size(n) == expected


@pytest.mark.parametrize("seconds, expected", [
    (0.4, "0 s"), (42, "42 s"), (60, "1 min"), (185, "3 min 5 s"), (3600, "1 h"), (7500, "2 h 5 min"),
    (86400 + 3 * 3600, "1 d 3 h"), (2 * 86400, "2 d"),
])
def test_duration(seconds, expected):
    assert duration(seconds) == expected


def test_window_uptime_spans_a_month_boundary_and_excludes_maintenance():
    end = datetime(2026, 2, 1, 7, 0, tzinfo=UTC)
    start = end - timedelta(days=1)
    rows = [(start - timedelta(minutes=1), "api", Status.CRITICAL),      # before the window
            (start + timedelta(hours=1), "api", Status.CRITICAL),        # January
            (start + timedelta(hours=2), "api", Status.OK),
            (end - timedelta(hours=1), "api", Status.WARNING),           # February: up
            (end - timedelta(minutes=30), "api", Status.CRITICAL),       # in maintenance: excluded
            (end, "api", Status.CRITICAL),                               # the next window
            (start + timedelta(hours=3), "cache", Status.UNKNOWN)]
    window = {"start": end - timedelta(minutes=40), "end": end - timedelta(minutes=20)}
    assert window_uptime(rows, start, end, [window]) == {"api": 66.667, "cache": None}


# -- routing carries the body ------------------------------------------------------------

NOW = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("now, at, expected_end", [
    (datetime(2026, 1, 6, 6, 59, tzinfo=UTC), time(7, 0), datetime(2026, 1, 5, 7, 0, tzinfo=UTC)),
    (datetime(2026, 1, 6, 7, 0, tzinfo=UTC), time(7, 0), datetime(2026, 1, 6, 7, 0, tzinfo=UTC)),
    (datetime(2026, 1, 6, 23, 0, tzinfo=UTC), time(22, 30), datetime(2026, 1, 6, 22, 30, tzinfo=UTC)),
])
def test_digest_window(now, at, expected_end):
    assert digest_window(now, at) == (expected_end - timedelta(days=1), expected_end)


def test_digest_key_is_the_key_due_uses():
    _, end = digest_window(NOW)
    (msg,) = [m for m in due(set(), [], NOW, channels=("email",)) if m.kind == "digest"]
    assert msg.key == digest_key("email", end) == "email:digest:2026-01-06"
    assert due({digest_key("email", end)}, [], NOW, channels=("email",)) == []


def test_digest_lines_come_first_then_the_info_alerts():
    report = Alert(fingerprint("backup status report", "backups", "backups.daily"), "backup status report",
                   Severity.INFO, "backups", "backups.daily")
    events = [Event("fired", report, NOW - timedelta(hours=5))]
    body = render_digest(FULL, *digest_window(NOW))
    (msg,) = [m for m in due(set(), events, NOW, channels=("email",), digest_lines=body) if m.kind == "digest"]
    assert msg.lines[:len(body)] == tuple(body)
    assert msg.lines[len(body)] == "Info alerts"
    assert msg.lines[len(body) + 1].strip().startswith("backup status report: backups (backups.daily)")
    assert msg.alerts == (report,)
    (empty,) = [m for m in due(set(), [], NOW, channels=("email",), digest_lines=["Backups", "  x"])
                if m.kind == "digest"]
    assert empty.lines == ("Backups", "  x", "Info alerts", "  no info alerts")


def test_without_digest_lines_the_digest_is_unchanged():
    (msg,) = [m for m in due(set(), [], NOW, channels=("email",)) if m.kind == "digest"]
    assert msg.lines == ("no info alerts",)
