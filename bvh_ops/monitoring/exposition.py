"""One probe cycle in the Prometheus text exposition format (what ``/metrics`` will serve, and
``bvh-ops health-check --prometheus`` prints), through ``prometheus_client``, which escapes label
values (quotes, backslashes, newlines in a configured endpoint name).

Statuses are numbers in severity order, so ``max()`` over checks is the overall and an alert rule
can say ``>= 3``: **0 ok, 1 warning, 2 unknown, 3 critical** (results.Status.rank). A check's
``detail`` is never a label (free text would make a new series per value, and may be long).

A fresh ``CollectorRegistry`` per render: no process-global state, so rendering twice, or in a
process that also runs Prefect (which registers its own collectors), cannot clash.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from bvh_ops.monitoring.cycle import CycleResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUS_HELP = "0 ok, 1 warning, 2 unknown (could not check), 3 critical"


def render(cycle: CycleResult) -> str:
    registry = CollectorRegistry(auto_describe=True)
    status = Gauge("bvh_ops_check_status", f"Status of one check: {STATUS_HELP}", ["name", "service"],
                   registry=registry)
    value = Gauge("bvh_ops_check_value", "The check's measured value, in the unit of its unit label",
                  ["name", "service", "unit"], registry=registry)
    for check in cycle.checks:
        status.labels(check.name, check.service).set(check.status.rank)
        if check.value is not None:
            value.labels(check.name, check.service, check.unit).set(check.value)
    Gauge("bvh_ops_system_status", f"Worst status of the cycle: {STATUS_HELP}",
          registry=registry).set(cycle.status.rank)
    Gauge("bvh_ops_cycle_seconds", "Wall time of the probe cycle", registry=registry).set(cycle.wall_seconds)
    Gauge("bvh_ops_cycle_cpu_seconds", "Process CPU time spent by the probe cycle",
          registry=registry).set(cycle.cpu_seconds)
    Gauge("bvh_ops_cycle_timestamp_seconds", "When the cycle ran (Unix time)",
          registry=registry).set(cycle.checked_at.timestamp())
    return generate_latest(registry).decode("utf-8")
