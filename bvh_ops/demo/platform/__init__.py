"""The sample lottery platform: stands in for the real lottery API in the demo and the tests.

An HTTP service over the sample database (login, draws, wallet, deposit, ticket purchase) with
the runbook's monitoring endpoints (``/api/health``, ``/api/health/detailed``, ``/api/metrics``,
``/api/status``), Redis as its cache where one answers, JSON log lines in the runbook's
categories, faults it can be told to show (``POST /admin/faults``), and a workload driver.

    handle = serve_platform(dsn, "127.0.0.1", 0, "logs/platform.jsonl")
    with WorkloadDriver(handle.url, rate=20):
        handle.set_faults(slow_ms=2000)
        ...
    handle.stop()

Modules: app (routes, middleware), state (the running state, heartbeat), health (the payloads,
pure), metrics (windows, psutil), db (pool, lottery operations), cache, logs, faults, accounts,
serve (the subprocess), driver (the workload).
"""

from bvh_ops.demo.platform.accounts import sample_password
from bvh_ops.demo.platform.driver import DriverStats, WorkloadDriver
from bvh_ops.demo.platform.logs import read_lines
from bvh_ops.demo.platform.serve import PlatformHandle, serve_platform

__all__ = ["DriverStats", "PlatformHandle", "WorkloadDriver", "read_lines", "sample_password", "serve_platform"]
