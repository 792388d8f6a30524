"""Findings as alerts (pure parts): a drill's failed checks become the runbook's critical "data
corruption detected" or a warning for a missed objective; findings fire under their own title."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.alerting.engine import Alerter
from bvh_ops.alerting.findings import Finding, check_name
from bvh_ops.alerting.rules import Severity
from bvh_ops.monitoring.results import Check, Status
from tasks.drill_tasks import drill_findings

T0 = datetime(2026, 11, 28, 14, 0, tzinfo=UTC)


def report(*checks):
    return {"backup_id": "20261128T020000Z-ab12", "checks": [
        {"name": n, "status": s, "detail": d} for n, s, d in checks]}


def test_failed_data_check_is_data_corruption_and_a_missed_objective_a_warning():
    found = drill_findings(report(("row_counts", "failed", "wallets: 10 != 12"),
                                  ("rto_objective", "failed", "1200.0 s > objective 900 s"),
                                  ("fingerprints", "passed", "")))
    assert [(f.key, f.severity) for f in found] == [("restore", Severity.CRITICAL), ("objectives", Severity.WARNING)]
    assert found[0].title.startswith("data corruption detected") and "wallets: 10 != 12" in found[0].detail
    assert drill_findings(report(("row_counts", "passed", ""))) == []



def test_a_drill_that_could_not_run_is_a_warning_not_corruption():
    """A scratch server that did not answer (the stage not verified) is not data corruption, and
    not silence either: the drill did not prove the backup recoverable."""
    found = drill_findings(report(("start", "not_verified", "database unreachable at 127.0.0.1:1"),
                                  ("fingerprints", "passed", "")))
    assert [(f.key, f.severity) for f in found] == [("unverified", Severity.WARNING)]
    assert "could not prove recoverability" in found[0].title and "127.0.0.1:1" in found[0].detail
    assert not any(f.title.startswith("data corruption") for f in found)

def test_a_finding_fires_under_its_own_title_and_resolves_when_cleared():
    alerter = Alerter(["email"])
    name = check_name("security", "hba.trust", Severity.CRITICAL)
    bad = Check(name, "security", Status.CRITICAL, detail="pg_hba allows trust from any address\nline 3: host all")
    out = alerter.observe([bad], T0)
    assert [(e.kind, e.alert.name, e.alert.severity) for e in out.events] == [
        ("fired", "pg_hba allows trust from any address", Severity.CRITICAL)]
    assert [m.subject for m in out.queued] == [
        "[CRITICAL FIRING] pg_hba allows trust from any address: security (finding:security:hba.trust)"]
    ok = Check(name, "security", Status.OK, detail="pg_hba allows trust from any address")
    out = alerter.observe([ok], T0 + timedelta(minutes=1))
    assert [e.kind for e in out.events] == ["resolved"]


def test_info_findings_go_to_the_daily_summary_not_at_once():
    alerter = Alerter(["email"])
    name = check_name("capacity", "disk.forecast", Severity.INFO)
    out = alerter.observe([Check(name, "capacity", Status.WARNING, detail="disk full in 40 days")], T0)
    assert out.events and out.events[0].alert.severity is Severity.INFO and out.queued == []


@pytest.mark.parametrize("key, title", [("", "x"), ("a b", "x"), ("ok", ""), ("ok", "two\nlines")])
def test_bad_findings_are_refused(key, title):
    with pytest.raises(ValueError):
        Finding(key, Severity.WARNING, title)
