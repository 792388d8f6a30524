"""Monitoring's pure parts: how statuses combine, the threshold judgements, exit codes, and the
cycle's deadline (a probe that never returns is abandoned, not waited for)."""

from __future__ import annotations

import threading

import pytest

from bvh_ops.config import Settings
from bvh_ops.monitoring import thresholds as th
from bvh_ops.monitoring.cycle import Job, cycle_deadline, run_jobs
from bvh_ops.monitoring.results import Check, Status, exit_code, overall, worst

OK, WARN, UNK, CRIT = Status.OK, Status.WARNING, Status.UNKNOWN, Status.CRITICAL


@pytest.mark.parametrize("statuses, expected", [
    ([OK], OK),
    ([OK, OK], OK),
    ([OK, WARN], WARN),
    ([OK, UNK], UNK),
    ([WARN, UNK], UNK),
    ([UNK, CRIT], CRIT),
    ([OK, WARN, UNK, CRIT], CRIT),
    ([], UNK),  # nothing checked is never healthy
])
def test_worst_wins_and_unknown_is_never_ok(statuses, expected):
    assert worst(statuses) is expected


@pytest.mark.parametrize("status, code", [(OK, 0), (WARN, 1), (UNK, 1), (CRIT, 2)])
def test_exit_codes(status, code):
    assert exit_code(status) == code


def test_overall_and_json():
    checks = [Check("a", "api", OK, 12.0, "ms", "fine"), Check("b", "host", WARN, 90.0, "%", "hot")]
    assert overall(checks) is WARN
    assert checks[1].to_json() == {"name": "b", "service": "host", "status": "warning", "value": 90.0,
                                   "unit": "%", "detail": "hot"}


@pytest.mark.parametrize("value, expected", [(50, OK), (80, OK), (80.1, WARN), (95, WARN), (95.1, CRIT)])
def test_above_is_exclusive_like_the_runbook(value, expected):
    assert th.above(value, 80, 95) is expected


@pytest.mark.parametrize("value, expected", [(99, OK), (90, OK), (89.9, WARN), (7, WARN), (6.9, CRIT)])
def test_below(value, expected):
    assert th.below(value, 90, 7) is expected


H = 3600


@pytest.mark.parametrize("age_s, expected", [(None, CRIT), (0, OK), (25 * H, OK), (26 * H, OK), (26 * H + 1, CRIT)])
def test_backup_age(age_s, expected):
    assert th.age(age_s, 26 * H) is expected


@pytest.mark.parametrize("lag, expected", [(None, CRIT), (0, OK), (300, OK), (301, WARN), (600, WARN), (601, CRIT)])
def test_wal_lag_against_rpo(lag, expected):
    assert th.wal_lag(lag, 300) is expected


@pytest.mark.parametrize("age_days, newest_failed, expected", [
    (None, False, CRIT), (None, True, CRIT), (1, False, OK), (1, True, WARN), (8, False, OK), (8.01, False, CRIT),
    (9, True, CRIT),
])
def test_drill(age_days, newest_failed, expected):
    age_s = None if age_days is None else age_days * 86400
    assert th.drill(age_s, 8 * 86400, newest_failed=newest_failed) is expected


def test_limits_follow_the_settings():
    s = Settings(cpu_warning_percent=70, disk_critical_percent=99, rpo_objective_seconds=120,
                 incremental_backup_grace_hours=2)
    lim = th.Limits.from_settings(s)
    assert (lim.cpu_warning_percent, lim.disk_critical_percent, lim.rpo_objective_seconds) == (70, 99, 120)
    assert lim.incremental_backup_grace_hours == 2 and lim.memory_warning_percent == 85
    # runbook defaults
    d = th.Limits.from_settings(Settings())
    assert (d.response_time_warning_ms, d.memory_warning_percent, d.cpu_warning_percent) == (1000, 85, 80)
    assert (d.disk_warning_percent, d.disk_critical_percent) == (85, 95)
    assert (d.daily_backup_max_age_hours, d.incremental_backup_max_age_hours, d.drill_max_age_days) == (26, 6, 8)


def test_cycle_deadline_is_bounded_by_the_interval():
    assert cycle_deadline(Settings()) == 15  # 2 x the 5 s default timeout + 5
    s = Settings(monitor_interval_seconds=10, endpoints=[{"name": "a", "service": "api", "url": "http://x/",
                                                          "timeout_seconds": 20}])
    assert cycle_deadline(s) == 10


def test_jobs_past_the_deadline_are_abandoned_and_reported():
    release = threading.Event()

    def hang():
        release.wait(60)
        return []

    jobs = [Job("fast", "api", lambda: [Check("fast", "api", OK)]),
            Job("endpoint-hung", "api", hang, CRIT),
            Job("host", "host", hang),
            Job("later", "api", lambda: [Check("later", "api", OK)], CRIT),
            Job("broken", "db", lambda: 1 / 0)]
    try:
        checks = run_jobs(jobs, deadline_seconds=0.3, workers=2)
    finally:
        release.set()
    by_name = {c.name: c for c in checks}
    assert [c.name for c in checks] == ["fast", "endpoint-hung", "host", "later", "broken"]
    assert by_name["fast"].status is OK
    assert by_name["endpoint-hung"].status is CRIT and "deadline" in by_name["endpoint-hung"].detail
    assert by_name["host"].status is UNK
    # two workers, both stuck: the rest never started, which is unknown (not checked), not critical
    assert by_name["later"].status is UNK and "not started" in by_name["later"].detail
    assert by_name["broken"].status is UNK


def test_a_probe_that_raises_is_unknown_with_its_error():
    checks = run_jobs([Job("db", "database", lambda: 1 / 0)], deadline_seconds=5)
    assert checks[0].status is UNK and "ZeroDivisionError" in checks[0].detail


def _alert(severity, state="firing", **flags):
    return {"name": f"{severity} thing", "severity": severity, "state": state, "service": "backups",
            "since": "2026-11-30T00:00:00+00:00", **flags}


@pytest.mark.parametrize("alerts, expected", [
    ([], "healthy"),
    ([_alert("critical")], "critical"),              # a firing data-corruption finding: not "healthy"
    ([_alert("warning"), _alert("critical", state="pending")], "warning"),  # pending has not fired
    ([_alert("critical", silenced=True)], "healthy"),
    ([_alert("critical", inhibited=True)], "healthy"),
    ([_alert("info")], "healthy"),
])
def test_firing_alerts_set_the_floor_of_the_system_status(alerts, expected):
    from bvh_ops.monitoring.status import with_alerts

    board = with_alerts({"systemStatus": "healthy", "notes": ["alerts: not read"]}, alerts)
    assert board["systemStatus"] == expected and board["alerts"] == alerts
    assert not any(n.startswith("alerts:") for n in board["notes"])
    assert any("firing alert" in n for n in board["notes"]) == (expected != "healthy")
    assert with_alerts({"systemStatus": "critical", "notes": []}, alerts)["systemStatus"] == "critical"  # never lowered
