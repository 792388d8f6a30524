"""The schedules probe against a real Prefect server (the session's test harness): deployments
with cron schedules and flow runs in given states, read back over the REST API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.config import AlertingSettings, Settings
from bvh_ops.monitoring.cycle import run_cycle
from bvh_ops.monitoring.prefect_runs import probe_schedules
from bvh_ops.monitoring.results import Status
from bvh_ops.pg.cluster import free_port

ALERTING = AlertingSettings(deadman_default_grace_minutes=60)


@pytest.fixture
def api(prefect_harness) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _deployment(client, name: str, cron: str | None, tags=("bvh-ops",)):
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    flow_id = client.create_flow_from_name(f"flow-{name}")
    schedules = [DeploymentScheduleCreate(schedule=CronSchedule(cron=cron, timezone="UTC"), active=True)] if cron \
        else []
    return client.create_deployment(flow_id=flow_id, name=name, schedules=schedules, tags=list(tags))


def _run(client, deployment_id, expected: datetime, final):
    from prefect.states import Scheduled

    run = client.create_flow_run_from_deployment(deployment_id, state=Scheduled(scheduled_time=expected))
    client.set_flow_run_state(run.id, final, force=True)
    return run


def test_missed_schedule_and_failed_run_are_critical(api):
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Failed

    suffix = uuid.uuid4().hex[:8]
    missed, healthy, failing = f"missed-{suffix}", f"healthy-{suffix}", f"failing-{suffix}"
    # Judged two days ahead: the deployments were created before the 02:00 schedule then due.
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=2)
    due = now.replace(hour=2)
    with get_client(sync_client=True) as client:
        _deployment(client, missed, "0 2 * * *")
        ok_id = _deployment(client, healthy, "0 2 * * *")
        _run(client, ok_id, due, Completed())
        failing_id = _deployment(client, failing, None)
        _run(client, failing_id, now - timedelta(hours=1),
             Failed(message="backup failed: postgresql://bvh:hunter2@db/lottery refused\nmore"))
        _deployment(client, f"untagged-{suffix}", "0 2 * * *", tags=("other",))
        _deployment(client, "monitoring", "0 * * * *")   # never ran: the automations watch it, not itself

    checks = {c.name: c for c in probe_schedules(api, ALERTING, now)}

    gone = checks[f"deadman:{missed}"]
    assert gone.status is Status.CRITICAL and gone.service == "schedules"
    assert f"no successful run of {missed} since its {due:%Y-%m-%d} 02:00 UTC schedule (grace 60 min)" in gone.detail
    assert checks[f"deadman:{healthy}"].status is Status.OK
    assert checks[f"run:{healthy}"].status is Status.OK
    failed = checks[f"run:{failing}"]
    assert failed.status is Status.CRITICAL
    assert "Failed" in failed.detail and "backup failed" in failed.detail and "hunter2" not in failed.detail
    assert f"deadman:{failing}" not in checks          # no schedule: not watched
    assert not any(suffix in n and "untagged" in n for n in checks)   # not this project's
    assert "deadman:monitoring" not in checks and "run:monitoring" not in checks


def test_unreachable_api_is_unknown_never_ok():
    url = f"http://127.0.0.1:{free_port()}/api"
    checks = probe_schedules(url, ALERTING, datetime.now(UTC), timeout=2, deadline=3)
    assert [(c.name, c.status) for c in checks] == [("schedules", Status.UNKNOWN)]
    assert checks[0].detail.startswith(f"Prefect API at {url} could not be read: ConnectError")


def test_the_cycle_runs_the_probe_only_where_prefect_api_url_is_set(api, monkeypatch, tmp_path):
    settings = Settings(state_dir=tmp_path, disk_paths=[tmp_path])
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = run_cycle(settings)
    assert "schedules (PREFECT_API_URL is not set)" in result.not_monitored
    assert not [c for c in result.checks if c.service == "schedules"]

    monkeypatch.setenv("PREFECT_API_URL", api)
    result = run_cycle(settings)
    assert not [n for n in result.not_monitored if n.startswith("schedules")]
    mine = [c for c in result.checks if c.service == "schedules"]
    assert mine and all(c.status is not Status.OK or c.detail for c in mine)
