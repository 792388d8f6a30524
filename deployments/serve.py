"""`bvh-ops serve`: every deployment of prefect.yaml with its schedule, served from this
machine without a work pool (Prefect's ``serve``), for small installs. prefect.yaml stays the
single source of names, schedules, parameters, tags and concurrency limits."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_prefect_yaml(path: Path | None = None) -> dict[str, Any]:
    return yaml.safe_load((path or ROOT / "prefect.yaml").read_text())


def _flow(entrypoint: str):
    path, func = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), func)


def runner_deployments(path: Path | None = None) -> list[Any]:
    """RunnerDeployments built from prefect.yaml (same names, schedules, limits)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.client.schemas.schedules import CronSchedule

    out = []
    for dep in load_prefect_yaml(path)["deployments"]:
        limit = dep.get("concurrency_limit")
        if isinstance(limit, dict):
            limit = ConcurrencyLimitConfig(
                limit=limit["limit"], collision_strategy=ConcurrencyLimitStrategy(limit["collision_strategy"]))
        schedules = [CronSchedule(cron=s["cron"], timezone=s.get("timezone", "UTC"))
                     for s in dep.get("schedules") or [] if s.get("active", True)]
        out.append(_flow(dep["entrypoint"]).to_deployment(
            name=dep["name"],
            description=dep.get("description"),
            tags=dep.get("tags"),
            parameters=dep.get("parameters") or {},
            schedules=schedules or None,
            concurrency_limit=limit,
            enforce_parameter_schema=dep.get("enforce_parameter_schema", True),
        ))
    return out


def serve() -> None:  # pragma: no cover - runs until interrupted
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments())
