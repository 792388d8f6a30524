"""Alert rules and their state machine: thresholds, dedup, inhibition, silences (injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.alerting.rules import DEFAULT_RULES, Matcher, Rule, Severity, fingerprint
from bvh_ops.alerting.state import Phase, Silence, evaluate
from bvh_ops.monitoring.results import Check, Status

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
OK, WARN, CRIT = Status.OK, Status.WARNING, Status.CRITICAL
RULE = Rule("db down", Severity.CRITICAL, Matcher(check="database.reachable"), fire_after=2, resolve_after=3)
DB_WARN = Rule("db slow", Severity.WARNING, Matcher(check="database.conn*", service="database",
                                                   statuses=frozenset({WARN})))


def db(status, name="database.reachable"):
    return Check(name, "database", status)


def run(samples, rules=(RULE,), silences=()):
    """Feed one list of checks per cycle, 30 s apart; return (states, events per cycle)."""
    states, per_cycle = {}, []
    for i, checks in enumerate(samples):
        states, events = evaluate(states, rules, checks, T0 + timedelta(seconds=30 * i), silences=silences)
        per_cycle.append([(e.kind, e.alert.name, e.silenced, e.inhibited) for e in events])
    return states, per_cycle


@pytest.mark.parametrize("statuses, phase, fired_at, resolved_at", [
    ([CRIT], Phase.PENDING, None, None),
    ([CRIT, CRIT], Phase.FIRING, 1, None),
    ([CRIT, OK, CRIT], Phase.PENDING, None, None),              # not consecutive: never fires
    ([CRIT, CRIT, OK, OK], Phase.FIRING, 1, None),              # 2 good < 3: still firing
    ([CRIT, CRIT, OK, OK, CRIT, OK, OK], Phase.FIRING, 1, None),  # a bad sample resets the count
    ([CRIT, CRIT, OK, OK, OK], Phase.RESOLVED, 1, 4),
    ([CRIT, CRIT, OK, OK, OK, CRIT, CRIT], Phase.FIRING, 1, 4),   # a new episode fires again
    ([WARN, WARN, WARN], Phase.INACTIVE, None, None),           # not a bad status for this rule
])
def test_thresholds(statuses, phase, fired_at, resolved_at):
    states, cycles = run([[db(s)] for s in statuses])
    (state,) = states.values()
    assert state.phase is phase
    fired = [i for i, ev in enumerate(cycles) if ("fired", "db down", False, False) in ev]
    resolved = [i for i, ev in enumerate(cycles) if ("resolved", "db down", False, False) in ev]
    assert (fired[:1] or [None])[0] == fired_at
    assert (resolved[:1] or [None])[0] == resolved_at


def test_one_alert_per_fingerprint_and_one_fired_event():
    states, cycles = run([[db(CRIT)]] * 6)
    assert len(states) == 1 and sum(len(c) for c in cycles) == 1
    fp = fingerprint("db down", "database", "database.reachable")
    assert fp in states and fp == fingerprint("db down", "database", "database.reachable")
    assert fp != fingerprint("db down", "api", "database.reachable")


def test_inhibition_mutes_database_warnings_while_unreachable():
    rules = (RULE, DB_WARN)
    samples = [[db(CRIT), db(WARN, "database.connections")]] * 2 + [[db(OK), db(WARN, "database.connections")]] * 3
    states, cycles = run(samples, rules)
    assert ("fired", "db down", False, False) in cycles[1]
    mid, _ = run(samples[:2], rules)
    assert next(s for s in mid.values() if s.alert.name == "db slow").inhibited
    warn = next(s for s in states.values() if s.alert.name == "db slow")
    assert warn.phase is Phase.FIRING and not warn.inhibited   # the critical resolved: no longer muted


def test_inhibition_only_while_source_fires():
    states, cycles = run([[db(CRIT), db(WARN, "database.connections")]], (RULE, DB_WARN))
    # the source is only pending in cycle 0: the warning is not muted
    assert cycles[0] == [("fired", "db slow", False, False)]
    states, cycles = run([[db(CRIT)], [db(CRIT), db(WARN, "database.connections")]], (RULE, DB_WARN))
    assert ("fired", "db slow", False, True) in cycles[1]


def test_silence_marks_but_still_changes_state_and_expires():
    silence = Silence(until=T0 + timedelta(seconds=45), name="db *", comment="maintenance")
    states, cycles = run([[db(CRIT)]] * 2 + [[db(OK)]] * 3, silences=(silence,))
    assert cycles[1] == [("fired", "db down", True, False)]       # at T0+30 s: silenced
    assert cycles[4] == [("resolved", "db down", False, False)]   # at T0+120 s: expired
    (state,) = states.values()
    assert state.phase is Phase.RESOLVED and not state.silenced


def test_default_rules_cover_the_runbook_criticals():
    checks = [Check("api-health", "api", CRIT), Check("database.reachable", "database", CRIT),
              Check("backups.daily", "backups", CRIT), Check("host.cpu", "host", WARN)]
    states = {}
    for i in range(2):
        states, _ = evaluate(states, DEFAULT_RULES, checks, T0 + timedelta(seconds=30 * i))
    firing = {(s.alert.name, s.alert.severity) for s in states.values() if s.phase is Phase.FIRING}
    assert firing == {("system down", Severity.CRITICAL), ("database connection failures", Severity.CRITICAL),
                      ("backup missing or stale", Severity.CRITICAL)}
    assert any(s.alert.name == "high CPU" and s.phase is Phase.PENDING for s in states.values())


def test_a_silence_that_expires_while_firing_notifies_then():
    until = T0 + timedelta(seconds=75)   # covers cycles 0..2 (0 s, 30 s, 60 s)
    silence = Silence(until=until, check="database.reachable")
    _, cycles = run([[db(CRIT)]] * 5, silences=(silence,))
    assert cycles[1] == [("fired", "db down", True, False)]
    assert cycles[2] == []
    assert cycles[3] == [("fired", "db down", False, False)]   # expired at 75 s: notified at 90 s
    assert cycles[4] == []
