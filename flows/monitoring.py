"""Monitoring: one flow run per hour that loops — a probe cycle every monitor_interval_seconds
(30 s), each recorded as samples in the ops database — so the run history holds 24 runs a day,
not 2,880, and the probes keep their 30-second rhythm. Every cycle also evaluates the alert
rules and queues what is due; delivery runs on its own threads (a slow SMTP server never delays
a probe). The run publishes the hour's summary and an artifact per incident that resolved in it.
It fails on a sustained outage (CRITICAL_STREAK cycles) only when no alert channel is
configured: then the failed run is the alert of last resort."""

from __future__ import annotations

import threading
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from bvh_ops.alerting.render import incident_markdown
from bvh_ops.alerting.runtime import AlertingRuntime
from bvh_ops.config import load_settings
from bvh_ops.errors import BvhOpsError
from bvh_ops.monitoring.cycle import run_cycle
from bvh_ops.monitoring.hour import CRITICAL_STREAK, HourSummary
from bvh_ops.monitoring.loop import History, run_monitor
from bvh_ops.opsdb.database import running_dsn


class ServiceDown(BvhOpsError):
    """A service was critical for several probe cycles in a row."""

    exit_code = 8


@flow(name="monitoring", flow_run_name="monitoring", retries=0, log_prints=False)
def monitoring(minutes: float = 59.0, interval: float | None = None) -> dict[str, Any]:
    """Probe every ``interval`` seconds (default monitor_interval_seconds) for ``minutes``
    (59: the run ends before the next hourly one starts), recording samples; then publish the
    hour (cycles, worst status, share of cycles up per service) and fail on a sustained outage."""
    settings = load_settings()
    logger = get_run_logger()
    every = settings.monitor_interval_seconds if interval is None else interval
    summary = HourSummary()
    deadline = time.monotonic() + minutes * 60
    stop = threading.Event()

    def wait(seconds: float) -> bool:
        """Sleep until the next cycle, or stop when the hour is over."""
        left = deadline - time.monotonic()
        if left <= seconds:
            stop.wait(max(0.0, left))
            return True
        return stop.wait(seconds)

    alerting = AlertingRuntime.start(settings, lambda: running_dsn(settings))
    if alerting is None:
        logger.warning("alerts are evaluated by another running monitor; this run probes and records only")
    elif alerting.note:
        logger.warning(alerting.note)
    closed: list = []
    said: list[str | None] = [None]

    def probe():
        result = run_cycle(settings)
        if alerting is not None:
            alerts = alerting.after_cycle(result)
            closed.extend(alerts.closed)
            if alerts.events:
                logger.warning("alerts: %s", alerts.summary())
            if alerts.problem != said[0]:
                logger.warning("alert state: %s", alerts.problem or "written to the ops database again")
                said[0] = alerts.problem
        return result

    def report(result, problem: str | None) -> None:
        summary.add(result, problem)
        bad = [f"{c.name} {c.status}" for c in result.checks if c.status != "ok"]
        if bad:
            logger.warning("cycle %s: %s", result.status, ", ".join(bad[:10]))

    try:
        run_monitor(probe, History(lambda: running_dsn(settings)), interval=every, cycles=None,
                    stop=stop, report=report, wait=wait)
    finally:
        if alerting is not None:
            alerting.stop()
    doc = summary.to_json()
    create_markdown_artifact(key="monitoring-hour", markdown=_markdown(doc),
                             description=f"monitoring: {summary.cycles} probe cycles")
    for incident in closed:
        create_markdown_artifact(key="incident", markdown=incident_markdown(incident),
                                 description=f"incident resolved: {incident.name} on {incident.service}")
    doc["incidents_resolved"] = len(closed)
    outages = summary.outages()
    if outages and (alerting is None or not alerting.deliverer.channels):
        raise ServiceDown(f"critical for {CRITICAL_STREAK}+ consecutive probe cycles: {', '.join(outages)}")
    return doc


def _markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Monitoring: {doc['cycles']} probe cycles", "",
             "| service | worst | up (share of cycles) | longest critical streak |", "|---|---|---|---|"]
    for name, s in doc["services"].items():
        up = "–" if s["up_percent"] is None else f"{s['up_percent']} %"
        lines.append(f"| {name} | {s['worst']} | {up} | {s['longest_critical_streak']} |")
    if doc["history_unavailable_cycles"]:
        lines += ["", f"Samples not stored for {doc['history_unavailable_cycles']} cycles: "
                      f"{doc['last_history_problem']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    monitoring()
