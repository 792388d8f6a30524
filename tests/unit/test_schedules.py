"""The scheduled-work planner: dead-man's switches and run outcomes, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.monitoring.results import Status
from bvh_ops.monitoring.schedules import Deployment, Run, Schedule, last_fire, plan_checks

DAILY = Schedule("0 2 * * *")
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def run(state: str, expected: datetime, minutes: float = 14, name: str = "daily-backup", message: str = "",
        state_name: str | None = None) -> Run:
    return Run(name, state, state_name or state.capitalize(), expected, expected + timedelta(minutes=minutes),
               message)


def daily(*runs: Run, **kw) -> Deployment:
    return Deployment("daily-backup", kw.pop("created", CREATED), (kw.pop("schedule", DAILY),),
                      timedelta(minutes=60), runs=runs, **kw)


def checks(dep: Deployment, now: datetime) -> dict[str, object]:
    return {c.name: c for c in plan_checks([dep], now)}


YESTERDAY_OK = run("COMPLETED", at(27, 2))


@pytest.mark.parametrize("now, status", [
    (at(28, 2, 59), Status.OK),         # 02:00 + 60 min grace not reached: yesterday's run counts
    (at(28, 3, 0), Status.CRITICAL),    # grace over, today's run never happened
    (at(28, 23, 0), Status.CRITICAL),
    (at(29, 2, 30), Status.CRITICAL),   # still judged against the 28th until the 29th's grace ends
])
def test_missed_daily_run_fires_at_schedule_plus_grace_and_not_before(now, status):
    check = checks(daily(YESTERDAY_OK), now)["deadman:daily-backup"]
    assert check.status is status and check.service == "schedules"
    if status is Status.CRITICAL:
        assert "no successful run of daily-backup since its 2026-11-28 02:00 UTC schedule (grace 60 min)" in \
            check.detail
        assert "last success 2026-11-27 02:14 UTC" in check.detail


def test_critical_detail_at_the_boundary_names_the_schedule_and_the_last_success():
    check = checks(daily(YESTERDAY_OK), at(28, 3))["deadman:daily-backup"]
    assert check.detail == ("no successful run of daily-backup since its 2026-11-28 02:00 UTC schedule "
                            "(grace 60 min); last success 2026-11-27 02:14 UTC")
    assert check.value == pytest.approx((at(28, 3) - at(27, 2, 14)).total_seconds()) and check.unit == "s"


def test_completed_run_at_0210_is_ok():
    dep = daily(YESTERDAY_OK, run("COMPLETED", at(28, 2), minutes=10))
    check = checks(dep, at(28, 9))["deadman:daily-backup"]
    assert check.status is Status.OK and "last success 2026-11-28 02:10 UTC" in check.detail
    assert check.value == pytest.approx(6 * 3600 + 50 * 60)


def test_a_run_still_going_after_the_grace_is_missed_and_says_what_it_is_doing():
    going = Run("daily-backup", "RUNNING", "Running", at(28, 2))
    check = checks(daily(YESTERDAY_OK, going), at(28, 3, 5))["deadman:daily-backup"]
    assert check.status is Status.CRITICAL and check.detail.endswith("the run since is Running")


def test_failed_latest_run_is_a_critical_run_check_with_its_message():
    message = "pg_dump failed: connection to postgresql://bvh:s3cret@db:5432/lottery refused\nTraceback ..."
    failed = run("FAILED", at(28, 2), minutes=3, name="daily-backup-xyz", message=message)
    found = checks(daily(YESTERDAY_OK, failed), at(28, 2, 30))
    check = found["run:daily-backup"]
    assert check.status is Status.CRITICAL
    assert check.detail == ("run daily-backup-xyz of daily-backup Failed at 2026-11-28 02:03 UTC: pg_dump failed: "
                            "connection to postgresql://bvh:***@db:5432/lottery refused")
    assert "s3cret" not in check.detail and "Traceback" not in check.detail
    assert found["deadman:daily-backup"].status is Status.OK   # 02:30: the grace is not over yet


@pytest.mark.parametrize("state, name", [("FAILED", "TimedOut"), ("CRASHED", "Crashed")])
def test_timed_out_and_crashed_runs_are_failures(state, name):
    dep = daily(YESTERDAY_OK, run(state, at(28, 2), state_name=name))
    check = checks(dep, at(28, 4))["run:daily-backup"]
    assert check.status is Status.CRITICAL and f" {name} at " in check.detail


def test_long_messages_are_trimmed():
    dep = daily(run("FAILED", at(28, 2), message="x" * 5000))
    assert len(checks(dep, at(28, 4))["run:daily-backup"].detail) < 300


def test_cancelled_by_the_concurrency_limit_is_not_a_failure():
    """CANCEL_NEW cancels a run whose predecessor is still busy: the predecessor's outcome decides."""
    cancelled = Run("daily-backup-2", "CANCELLED", "Cancelled", at(28, 2), at(28, 2), "Deployment concurrency "
                    "limit reached.")
    check = checks(daily(YESTERDAY_OK, cancelled), at(28, 2, 30))["run:daily-backup"]
    assert check.status is Status.OK and "Completed at 2026-11-27 02:14 UTC" in check.detail


def test_a_later_success_resolves_the_run_check():
    dep = daily(run("FAILED", at(27, 2)), run("COMPLETED", at(28, 2)))
    assert checks(dep, at(28, 4))["run:daily-backup"].status is Status.OK


def test_a_deployment_created_after_its_last_fire_time_is_not_due():
    dep = daily(created=at(28, 10))
    check = checks(dep, at(28, 12))["deadman:daily-backup"]
    assert check.status is Status.OK and check.value is None
    assert check.detail.startswith("daily-backup not due yet: created 2026-11-28 10:00 UTC")
    assert checks(dep, at(29, 3))["deadman:daily-backup"].status is Status.CRITICAL   # the 29th was due


def test_no_runs_at_all():
    found = checks(daily(), at(28, 12))
    assert found["deadman:daily-backup"].status is Status.CRITICAL
    assert "no success in the last 0 runs" in found["deadman:daily-backup"].detail
    assert found["run:daily-backup"].status is Status.OK


@pytest.mark.parametrize("dep", [
    daily(schedule=Schedule("0 2 * * *", active=False)),
    daily(paused=True),
    Deployment("dr-drill-on-demand", CREATED, ()),
], ids=["inactive-schedule", "paused-deployment", "no-schedule"])
def test_unscheduled_deployments_are_not_watched_but_their_failures_are(dep):
    dep = Deployment(dep.name, dep.created, dep.schedules, dep.grace, dep.paused,
                     (run("FAILED", at(28, 9)),))
    found = checks(dep, at(28, 12))
    assert not any(n.startswith("deadman:") for n in found)
    assert found[f"run:{dep.name}"].status is Status.CRITICAL


def test_grace_is_per_deployment():
    hourly = Deployment("monitoring", CREATED, (Schedule("0 * * * *"),), timedelta(minutes=90),
                        runs=(run("COMPLETED", at(28, 9), minutes=59, name="monitoring"),))
    # 10:00's run should end by 11:30; at 11:20 the judged schedule is still 09:00 -> ok
    assert checks(hourly, at(28, 11, 20))["deadman:monitoring"].status is Status.OK
    assert checks(hourly, at(28, 11, 30))["deadman:monitoring"].status is Status.CRITICAL


def test_the_latest_of_several_schedules_is_judged():
    dep = Deployment("twice", CREATED, (Schedule("0 2 * * *"), Schedule("0 14 * * *")), timedelta(minutes=30),
                     runs=(run("COMPLETED", at(28, 2)),))
    assert checks(dep, at(28, 14, 29))["deadman:twice"].status is Status.OK
    assert checks(dep, at(28, 14, 30))["deadman:twice"].status is Status.CRITICAL


def test_a_bad_cron_expression_is_unknown_never_ok():
    check = checks(daily(schedule=Schedule("61 2 * * *")), at(28, 12))["deadman:daily-backup"]
    assert check.status is Status.UNKNOWN and "61 2 * * *" in check.detail


@pytest.mark.parametrize("schedule, moment, expected", [
    (DAILY, at(28, 2), at(28, 2)),                       # a fire time is its own latest
    (DAILY, at(28, 1, 59), at(27, 2)),
    (Schedule("0 */6 * * *"), at(28, 13, 5), at(28, 12)),
    (Schedule("0 5 * * 0"), at(28, 12), at(22, 5)),      # Sunday 2026-11-22
    (Schedule("0 4 1 * *"), at(28, 12), at(1, 4)),
    (Schedule("0 2 * * *", "Asia/Jerusalem"), at(28, 12), at(28, 0)),   # 02:00 in Israel (UTC+2)
])
def test_last_fire(schedule, moment, expected):
    assert last_fire(schedule, moment) == expected


def test_two_deployments_in_name_order():
    names = [c.name for c in plan_checks([daily(), Deployment("a-drill", CREATED, (DAILY,))], at(28, 12))]
    assert names == ["deadman:a-drill", "run:a-drill", "deadman:daily-backup", "run:daily-backup"]


def test_default_rules_alert_critically_on_both_checks():
    from bvh_ops.alerting.rules import DEFAULT_RULES, Severity

    found = checks(daily(run("FAILED", at(28, 2))), at(28, 4))
    for check_name, rule_name in [("deadman:daily-backup", "scheduled run missed"),
                                  ("run:daily-backup", "flow run failed")]:
        check = found[check_name]
        rules = [r for r in DEFAULT_RULES if r.matcher.watches(check) and r.matcher.is_bad(check)]
        assert [(r.name, r.severity, r.fire_after) for r in rules] == [(rule_name, Severity.CRITICAL, 1)]


def test_grace_settings():
    from pydantic import ValidationError

    from bvh_ops.config import AlertingSettings

    alerting = AlertingSettings(deadman_grace_minutes={"daily-backup": 120}, deadman_default_grace_minutes=30)
    assert alerting.deadman_grace("daily-backup") == 120 and alerting.deadman_grace("dr-drill-weekly") == 30
    assert AlertingSettings().deadman_grace("monitoring") == 90 and AlertingSettings().deadman_grace("x") == 60
    with pytest.raises(ValidationError, match="grace of 'daily-backup' must be more than 0"):
        AlertingSettings(deadman_grace_minutes={"daily-backup": 0})
    with pytest.raises(ValidationError, match="deadman_default_grace_minutes"):
        AlertingSettings(deadman_default_grace_minutes=0)
    with pytest.raises(ValidationError, match="monitoring_silence_minutes"):
        AlertingSettings(monitoring_silence_minutes=5)


def test_every_deployment_in_prefect_yaml_carries_the_tag_the_probe_reads():
    from pathlib import Path

    import yaml

    from bvh_ops.monitoring.prefect_runs import TAG

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    assert all(TAG in d.get("tags", []) for d in spec["deployments"]), "untagged deployments are not watched"
