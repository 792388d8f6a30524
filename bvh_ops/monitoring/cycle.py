"""One probe cycle: every probe at once (threads), under one deadline, into one result.

Each probe bounds itself (request and connect timeouts); the deadline is the backstop for what
cannot be bounded from Python (a hung NFS ``statvfs``, a stuck DNS lookup). Probes run on daemon
threads, so one that never returns is abandoned at the deadline instead of holding the process
at exit; what it would have said becomes: an endpoint still waiting is ``critical`` (it hung),
any other probe still running is ``unknown``, and work that never started is ``unknown``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bvh_ops.config import Settings
from bvh_ops.monitoring.backups import probe_backups
from bvh_ops.monitoring.cache import probe_cache
from bvh_ops.monitoring.database import probe_database
from bvh_ops.monitoring.host import probe_host
from bvh_ops.monitoring.http import HttpSession, probe_endpoint
from bvh_ops.monitoring.prefect_runs import api_url, probe_schedules
from bvh_ops.monitoring.results import Check, Status, overall
from bvh_ops.monitoring.thresholds import Limits

# Concurrent probes: enough that 200 endpoints at a few ms each take well under a second, few
# enough that a cycle costs little memory (each thread reserves a stack).
MAX_WORKERS = 32


@dataclass(frozen=True)
class Job:
    name: str                       # the check name reported if the job does not finish
    service: str
    run: Callable[[], list[Check]]
    hung: Status = Status.UNKNOWN   # what a job still running at the deadline is


@dataclass(frozen=True)
class CycleResult:
    status: Status
    checked_at: datetime
    checks: list[Check]
    wall_seconds: float
    cpu_seconds: float  # process CPU (all threads) spent during the cycle
    not_monitored: list[str]  # probes without configuration: "cache (cache_url is not set)"

    def to_json(self) -> dict[str, object]:
        return {"status": str(self.status), "checked_at": self.checked_at.isoformat(),
                "checks": [c.to_json() for c in self.checks],
                "not_monitored": self.not_monitored,
                "wall_seconds": round(self.wall_seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3)}


def run_jobs(jobs: list[Job], deadline_seconds: float, *, workers: int = MAX_WORKERS) -> list[Check]:
    """Run ``jobs`` on up to ``workers`` daemon threads; results in job order. A job that raises
    is ``unknown`` with the error (a probe bug must not hide the other checks)."""
    results: list[list[Check] | None] = [None] * len(jobs)
    started = [False] * len(jobs)
    lock = threading.Condition()
    pending = list(range(len(jobs)))[::-1]
    remaining = [len(jobs)]

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                i = pending.pop()
                started[i] = True
            try:
                out = jobs[i].run()
            except Exception as exc:  # noqa: BLE001 - reported as the check's detail
                out = [Check(jobs[i].name, jobs[i].service, Status.UNKNOWN, None, "",
                             f"probe failed: {type(exc).__name__}: {str(exc)[:200]}")]
            with lock:
                results[i] = out
                remaining[0] -= 1
                lock.notify_all()

    for n in range(min(workers, len(jobs))):
        threading.Thread(target=worker, name=f"probe-{n}", daemon=True).start()
    end = time.monotonic() + deadline_seconds
    with lock:
        while remaining[0] and (left := end - time.monotonic()) > 0:
            lock.wait(left)
        pending.clear()  # nothing new starts after the deadline
        snapshot = list(results), list(started)
    checks: list[Check] = []
    for job, out, was_started in zip(jobs, *snapshot, strict=True):
        if out is not None:
            checks.extend(out)
        elif was_started:
            checks.append(Check(job.name, job.service, job.hung, None, "",
                                f"no result within the cycle's deadline of {deadline_seconds:g} s"))
        else:
            checks.append(Check(job.name, job.service, Status.UNKNOWN, None, "",
                                f"not started before the cycle's deadline of {deadline_seconds:g} s"))
    return checks


def not_monitored(settings: Settings) -> list[str]:
    """Probes that do not run because nothing configures them (reported, never counted as ok)."""
    missing = [("database", settings.database_url, "database_url"), ("cache", settings.cache_url, "cache_url"),
               ("backups", settings.repository, "repository"), ("api", settings.endpoints, "endpoints"),
               ("schedules", api_url(), "PREFECT_API_URL")]
    return [f"{what} ({field} is not set)" for what, value, field in missing if not value]


def build_jobs(settings: Settings, now: datetime, limits: Limits, session: HttpSession) -> list[Job]:
    """Every probe the settings configure, in report order. A probe runs where its target is
    configured (a monitor host may watch the platform without the backup repository; the
    schedules probe where ``PREFECT_API_URL`` names a Prefect server); the host probe always
    runs. What is not configured is listed by ``not_monitored``."""
    jobs = [Job(ep.name, ep.service, (lambda ep=ep: probe_endpoint(ep, limits, session)), Status.CRITICAL)
            for ep in settings.endpoints]
    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
        jobs.append(Job("database.reachable", "database", lambda: probe_database(dsn, limits)))
    if settings.cache_url is not None:
        url = settings.cache_url.get_secret_value()
        jobs.append(Job("cache.reachable", "cache", lambda: probe_cache(url, limits)))
    jobs.append(Job("host", "host", lambda: probe_host(list(settings.disk_paths), limits)))
    if settings.repository:
        jobs.append(Job("backups", "backups", lambda: probe_backups(settings, now, limits)))
    if (prefect_api := api_url()) is not None:
        # Dead-man's switches and failed runs of the scheduled deployments (monitoring.schedules).
        jobs.append(Job("schedules", "schedules", lambda: probe_schedules(prefect_api, settings.alerting, now)))
    return jobs


def cycle_deadline(settings: Settings) -> float:
    """The longest probe timeout plus a margin, never more than the interval between cycles."""
    longest = max([ep.timeout_seconds for ep in settings.endpoints] + [5.0])
    return min(settings.monitor_interval_seconds, 2 * longest + 5)


def run_cycle(settings: Settings, now: datetime | None = None, *, deadline_seconds: float | None = None,
              limits: Limits | None = None) -> CycleResult:
    """One cycle of every configured probe. ``now`` judges ages (backups, drills); ``limits``
    overrides the thresholds taken from the settings."""
    now = now or datetime.now(UTC)
    limits = limits or Limits.from_settings(settings)
    wall, cpu = time.monotonic(), time.process_time()
    session = HttpSession()
    try:
        checks = run_jobs(build_jobs(settings, now, limits, session),
                          deadline_seconds if deadline_seconds is not None else cycle_deadline(settings))
    finally:
        threading.Thread(target=session.close, daemon=True).start()  # a hung request must not block us
    return CycleResult(overall(checks), now, checks, time.monotonic() - wall, time.process_time() - cpu,
                       not_monitored(settings))
