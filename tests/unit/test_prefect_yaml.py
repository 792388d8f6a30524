"""prefect.yaml is validated strictly here because Prefect ignores misspelled keys silently:
every key known, every entrypoint importable, every schedule parseable, every parameter
default accepted by its flow's signature."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _fields(model) -> set[str]:
    names = set(model.model_fields)
    names |= {f.alias for f in model.model_fields.values() if f.alias}
    return names


def test_no_unknown_keys_anywhere():
    from prefect.cli.deploy._models import (
        ConcurrencyLimitSpec,
        DeploymentConfig,
        PrefectYamlModel,
        WorkPoolConfig,
    )

    doc = load()
    assert set(doc) - {"definitions"} <= _fields(PrefectYamlModel), set(doc) - _fields(PrefectYamlModel)
    PrefectYamlModel.model_validate(doc)
    for dep in doc["deployments"]:
        unknown = set(dep) - _fields(DeploymentConfig)
        assert not unknown, f"{dep['name']}: unknown keys {unknown}"
        assert set(dep["work_pool"]) <= _fields(WorkPoolConfig)
        if isinstance(dep.get("concurrency_limit"), dict):
            assert set(dep["concurrency_limit"]) <= _fields(ConcurrencyLimitSpec)
            assert dep["concurrency_limit"]["collision_strategy"] in ("ENQUEUE", "CANCEL_NEW")


def test_schedules_parse_in_utc():
    from prefect.cli.deploy._models import RawScheduleConfig
    from prefect.client.schemas.schedules import CronSchedule

    expected = {"daily-backup": ["0 2 * * *"], "incremental-backup": ["0 */6 * * *"],
                "monthly-archive": ["0 0 1 * *"], "dr-drill-weekly": ["0 5 * * 0"],
                "dr-drill-on-demand": [], "recover-application": [], "key-rotation": [],
                "monitoring": ["0 * * * *"], "uptime-report": ["0 4 1 * *"],
                "cleanup-logs": ["0 2 * * *"], "archive-logs": ["0 4 1 * *"],
                "analyze-logs": ["20 * * * *"], "weekly-log-report": ["0 6 * * 1"],
                "collect-logs": ["*/5 * * * *"],
                "audit-digest": ["15 * * * *"],
                "maintenance-daily": ["0 2 * * *"], "maintenance-weekly": ["0 3 * * 0"],
                "maintenance-monthly": ["0 4 1 * *"],
                "security-scan": ["0 3 * * 0"], "security-audit": ["0 4 1 * *"],
                "collect-capacity": ["30 2 * * *"], "capacity-planning": ["0 4 1 * *"],
                "replicate": ["*/5 * * * *"], "replicate-verify": ["30 4 * * 0"],
                "failover-drill": []}
    for dep in load()["deployments"]:
        crons = []
        for sched in dep.get("schedules") or []:
            RawScheduleConfig.model_validate(sched)  # extra="forbid": a typo fails here
            CronSchedule(cron=sched["cron"], timezone=sched["timezone"])
            assert sched["timezone"] == "UTC"
            crons.append(sched["cron"])
        assert crons == expected[dep["name"]]


@pytest.mark.parametrize("dep", load()["deployments"], ids=lambda d: d["name"])
def test_entrypoint_imports_and_parameters_fit_the_signature(dep):
    path, func = dep["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    flow = getattr(module, func)
    sig = inspect.signature(flow.fn)
    for name in dep.get("parameters", {}):
        assert name in sig.parameters, f"{dep['name']}: {name} is not a parameter of {func}"
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    import jsonschema

    jsonschema.validate(dep.get("parameters", {}), schema)
    assert dep["enforce_parameter_schema"] is True
    assert dep["work_pool"]["name"] == "bvh-ops"


def test_pull_step_runs_from_the_checkout():
    (step,) = load()["pull"]
    assert step == {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $BVH_OPS_PROJECT_DIR }}"}}


def test_serve_builds_the_same_deployments_as_prefect_yaml():
    from deployments.serve import runner_deployments

    deps = {d.name: d for d in runner_deployments()}
    assert set(deps) == {d["name"] for d in load()["deployments"]}
    daily = deps["daily-backup"]
    assert [s.schedule.cron for s in daily.schedules] == ["0 2 * * *"]
    assert daily.concurrency_limit == 1
    assert daily.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert not deps["dr-drill-on-demand"].schedules
    assert deps["dr-drill-weekly"].parameters["mode"] == "both"
