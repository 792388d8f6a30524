"""The schedules probe's adapter: reads this project's deployments (tag ``bvh-ops``, which every
prefect.yaml entry carries; all but the monitor's own, see ``SELF_DEPLOYMENT``), their schedules and their recent flow runs from the Prefect server
at ``PREFECT_API_URL``, and hands them to the pure planner (monitoring.schedules).

It speaks Prefect's REST API over httpx rather than importing Prefect's client: the domain stays
free of Prefect (tests/unit/test_layout.py), and the two POST ``/filter`` endpoints it reads are
the documented API (https://docs.prefect.io/v3/api-ref/rest-api/server/). Authentication as the
Prefect client does it: ``PREFECT_API_KEY`` (Prefect Cloud, bearer) or ``PREFECT_API_AUTH_STRING``
(a self-hosted server's basic auth). Bounded: ``RUNS_PER_DEPLOYMENT`` runs each, every request
cut at the timeout and the whole read at a deadline; an API that cannot be read is one
``unknown`` check, never ``ok``.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bvh_ops.config import AlertingSettings
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.schedules import SERVICE, Deployment, Run, Schedule, plan_checks
from bvh_ops.tls import default_context

TAG = "bvh-ops"
# The monitor does not judge its own deployment: the monitoring flow fails on purpose while a
# service is critical (monitoring.hour), so a run:/deadman: check of itself would fail every
# following run for ever. Prefect automations watch it instead (deployments/notifications.py).
SELF_DEPLOYMENT = "monitoring"
RUNS_PER_DEPLOYMENT = 20
# The Prefect server's cap on one filter page (PREFECT_API_DEFAULT_LIMIT).
MAX_DEPLOYMENTS = 200
TIMEOUT_SECONDS = 5.0


class PrefectApiError(Exception):
    """The Prefect API could not be read (unreachable, refused, an error status, a bad body)."""


def api_url(environ: Mapping[str, str] | None = None) -> str | None:
    """``PREFECT_API_URL`` where set: the schedules probe runs only against a real server."""
    value = (environ if environ is not None else os.environ).get("PREFECT_API_URL", "").strip()
    return value or None


def _headers(environ: Mapping[str, str]) -> dict[str, str]:
    headers = {"User-Agent": "bvh-ops-monitor"}
    if key := environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {key}"
    elif auth := environ.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return headers


def _shown(url: str) -> str:
    """The URL without credentials, for a detail line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class PrefectRuns:
    """A small reader of the two filter endpoints, under one deadline."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT_SECONDS, deadline: float = 2 * TIMEOUT_SECONDS,
                 environ: Mapping[str, str] | None = None) -> None:
        self.url = url.rstrip("/")
        self._end = time.monotonic() + deadline
        self._client = httpx.Client(timeout=timeout, verify=default_context(), headers=_headers(environ if environ is not None else os.environ),
                                    follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        left = self._end - time.monotonic()
        if left <= 0:
            raise PrefectApiError("no answer within the probe's deadline")
        try:
            response = self._client.post(f"{self.url}{path}", json=body,
                                         timeout=min(left, self._client.timeout.read or left))
        except httpx.HTTPError as exc:
            raise PrefectApiError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        if response.status_code != 200:
            raise PrefectApiError(f"POST {path} answered HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise PrefectApiError(f"POST {path} did not answer JSON") from exc

    def deployments(self) -> list[dict[str, Any]]:
        return self._post("/deployments/filter",
                          {"deployments": {"tags": {"all_": [TAG]}}, "limit": MAX_DEPLOYMENTS, "offset": 0})

    def runs(self, deployment_id: str, before: datetime) -> list[dict[str, Any]]:
        """The newest runs meant to start by ``before`` (the scheduler's future runs excluded)."""
        return self._post("/flow_runs/filter", {
            "flow_runs": {"deployment_id": {"any_": [deployment_id]},
                          "expected_start_time": {"before_": before.isoformat()}},
            "sort": "EXPECTED_START_TIME_DESC", "limit": RUNS_PER_DEPLOYMENT, "offset": 0})


def to_run(raw: Mapping[str, Any]) -> Run:
    state = raw.get("state") or {}
    return Run(name=raw.get("name") or "", state_type=raw.get("state_type") or state.get("type") or "",
               state_name=raw.get("state_name") or state.get("name") or "",
               expected_start=_when(raw.get("expected_start_time")), end=_when(raw.get("end_time")),
               message=state.get("message") or "")


def to_deployment(raw: Mapping[str, Any], runs: list[Run], grace: timedelta) -> Deployment:
    schedules = []
    for item in raw.get("schedules") or []:
        spec = item.get("schedule") or {}
        if "cron" in spec:   # interval and rrule schedules: none in prefect.yaml, not judged here
            schedules.append(Schedule(spec["cron"], spec.get("timezone") or "UTC", bool(item.get("active", True))))
    return Deployment(name=raw["name"], created=_when(raw["created"]), schedules=tuple(schedules), grace=grace,
                      paused=bool(raw.get("paused")), runs=tuple(runs))


def read_deployments(reader: PrefectRuns, alerting: AlertingSettings, now: datetime) -> list[Deployment]:
    found = []
    for raw in reader.deployments():
        if raw["name"] == SELF_DEPLOYMENT:
            continue
        runs = [to_run(r) for r in reader.runs(raw["id"], now)]
        found.append(to_deployment(raw, runs, timedelta(minutes=alerting.deadman_grace(raw["name"]))))
    return found


def probe_schedules(url: str, alerting: AlertingSettings, now: datetime, *, timeout: float = TIMEOUT_SECONDS,
                    deadline: float = 2 * TIMEOUT_SECONDS, environ: Mapping[str, str] | None = None) -> list[Check]:
    """``deadman:<deployment>`` and ``run:<deployment>`` for this project's deployments at ``url``;
    one ``unknown`` check ``schedules`` when the API cannot be read or holds none of them."""
    reader = PrefectRuns(url, timeout=timeout, deadline=deadline, environ=environ)
    try:
        deployments = read_deployments(reader, alerting, now)
    except (PrefectApiError, KeyError, TypeError, ValueError) as exc:
        return [Check("schedules", SERVICE, Status.UNKNOWN, None, "",
                      f"Prefect API at {_shown(url)} could not be read: {exc}")]
    finally:
        reader.close()
    if not deployments:
        return [Check("schedules", SERVICE, Status.UNKNOWN, None, "",
                      f"no deployment tagged {TAG} at {_shown(url)}: deploy prefect.yaml (deployments/deploy.sh)")]
    return plan_checks(deployments, now)
