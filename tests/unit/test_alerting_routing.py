"""Routing by severity: criticals at once, warnings one batch per channel per hour, info daily."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from bvh_ops.alerting.routing import due
from bvh_ops.alerting.rules import Severity, fingerprint
from bvh_ops.alerting.state import Alert, Event

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
CH = ("email", "webhook")


def alert(name, severity=Severity.CRITICAL, service="api", check="api-health"):
    return Alert(fingerprint(name, service, check), name, severity, service, check)


def ev(kind, a, minutes, **flags):
    return Event(kind, a, T0 + timedelta(minutes=minutes), **flags)


def kinds(messages, kind=None):
    return [(m.channel, m.kind) for m in messages if kind is None or m.kind == kind]


DOWN = alert("system down")


@pytest.mark.parametrize("events, now_min, expected", [
    ([ev("fired", DOWN, 1)], 1, [("email", "fired"), ("webhook", "fired")]),
    ([ev("fired", DOWN, 1)], 0, []),                                            # not yet happened
    ([ev("fired", DOWN, 1), ev("resolved", DOWN, 5)], 5,
     [("email", "fired"), ("webhook", "fired"), ("email", "resolved"), ("webhook", "resolved")]),
    ([ev("fired", DOWN, 1, silenced=True), ev("resolved", DOWN, 5, silenced=True)], 5,
     [("email", "resolved"), ("webhook", "resolved")]),                         # resolved still due
    ([ev("fired", DOWN, 1, inhibited=True)], 5, []),
])
def test_criticals_at_once(events, now_min, expected):
    messages = due(set(), events, T0 + timedelta(minutes=now_min), channels=CH)
    assert [k for k in kinds(messages) if k[1] in ("fired", "resolved")] == expected


def test_log_makes_due_idempotent_across_restarts():
    events = [ev("fired", DOWN, 1)]
    first = due(set(), events, T0 + timedelta(minutes=1), channels=CH)
    log = {m.key for m in first}
    assert due(log, events, T0 + timedelta(minutes=2), channels=CH) == []
    # the email went out, the webhook did not: only the webhook is still owed
    email_only = {m.key for m in first if m.channel == "email"}
    assert kinds(due(email_only, events, T0 + timedelta(minutes=2), channels=CH), "fired") == [("webhook", "fired")]


def test_warnings_of_one_hour_are_one_message_per_channel():
    cpu, mem, old = (alert(n, Severity.WARNING, "host", c) for n, c in
                     (("high CPU", "host.cpu"), ("high memory", "host.memory"), ("low disk", "host.disk:/")))
    events = [ev("fired", old, -90), ev("fired", cpu, 5), ev("fired", mem, 20), ev("resolved", mem, 30)]
    closed = [m for m in due(set(), events, T0 + timedelta(minutes=59), channels=CH) if m.kind == "batch"]
    # 08:00-09:00 and 09:00-10:00, when only the old one was firing; 10:00-11:00 is not closed yet
    assert [(m.channel, m.subject.split()[4]) for m in closed] == [
        ("email", "08:00-09:00"), ("webhook", "08:00-09:00"), ("email", "09:00-10:00"), ("webhook", "09:00-10:00")]
    batches = [m for m in due(set(), events, T0 + timedelta(minutes=61), channels=CH) if m.kind == "batch"]
    ten = [m for m in batches if "10:00-11:00" in m.subject]
    assert len(ten) == 2                                    # one per channel
    assert {a.name for a in ten[0].alerts} == {"high CPU", "high memory", "low disk"}
    assert any("resolved 10:30" in line for line in ten[0].lines)


def test_no_batch_for_an_hour_without_warnings():
    assert kinds(due(set(), [ev("fired", DOWN, 1)], T0 + timedelta(hours=3), channels=CH), "batch") == []


def test_silenced_warning_is_left_out_of_the_batch():
    cpu = alert("high CPU", Severity.WARNING, "host", "host.cpu")
    events = [ev("fired", cpu, 5, silenced=True)]
    assert kinds(due(set(), events, T0 + timedelta(hours=2), channels=CH), "batch") == []


@pytest.mark.parametrize("now, digest_day", [
    (datetime(2026, 1, 5, 6, 59, tzinfo=UTC), None),           # yesterday's is 24 h old: not owed
    (datetime(2026, 1, 5, 7, 0, tzinfo=UTC), "2026-01-05"),
    (datetime(2026, 1, 5, 12, 59, tzinfo=UTC), "2026-01-05"),  # a monitor restarted late still owes it
    (datetime(2026, 1, 5, 13, 1, tzinfo=UTC), None),           # past the 6 h catch-up
])
def test_daily_digest_at_its_time(now, digest_day):
    msgs = [m for m in due(set(), [], now, channels=("email",)) if m.kind == "digest"]
    assert [m.key for m in msgs] == ([f"email:digest:{digest_day}"] if digest_day else [])


def test_digest_lists_the_days_info_alerts_and_honours_a_configured_time():
    report = alert("backup status report", Severity.INFO, "backups", "backups.daily")
    now = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
    (msg,) = [m for m in due(set(), [ev("fired", report, 0)], now, channels=("email",), digest_at=time(9, 0))
              if m.kind == "digest"]
    assert msg.key == "email:digest:2026-01-06" and msg.alerts == (report,)
