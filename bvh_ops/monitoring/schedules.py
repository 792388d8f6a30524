"""Dead-man's switches and run outcomes of the scheduled work (pure: records in, checks out,
``now`` passed in).

Two checks per deployment, service ``schedules``:

- ``deadman:<deployment>``: the latest cron fire time F with F + grace <= now must have a
  COMPLETED run whose expected start is at or after F; otherwise ``critical`` (the run did not
  happen, is late, is still running past its grace, or did not succeed). Only deployments with an
  active schedule are watched; one created after F is not due yet (``ok``, said so).
- ``run:<deployment>``: the most recent finished run decides: Failed, Crashed (and TimedOut,
  a Failed state in Prefect) are ``critical``, Completed is ``ok``. Cancelled runs are skipped:
  a concurrency limit with CANCEL_NEW cancels a run because its predecessor is still busy, which
  is not a failure (the dead-man's switch notices if nothing succeeds). Every deployment is
  judged, scheduled or on demand.

Cron semantics are standard cron (cronsim, as Prefect's scheduler: day-of-month OR day-of-week
when both are restricted), evaluated in the schedule's timezone (prefect.yaml uses UTC).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from bvh_ops.monitoring.results import Check, Status

SERVICE = "schedules"
# Prefect's state types (prefect.client.schemas.objects.StateType) this module reads.
COMPLETED, FAILED, CRASHED, CANCELLED = "COMPLETED", "FAILED", "CRASHED", "CANCELLED"
_FAILURES = frozenset({FAILED, CRASHED})
_DECIDING = _FAILURES | {COMPLETED}
MESSAGE_CHARS = 200
# user:password@ in any URL of a message (a DSN in an exception text): the password goes.
_URL_PASSWORD = re.compile(r"(?P<pre>[A-Za-z][\w+.-]*://[^\s:/@]*:)[^\s@]+@")


@dataclass(frozen=True)
class Schedule:
    cron: str                 # "0 2 * * *"
    timezone: str = "UTC"     # IANA name the cron is read in
    active: bool = True       # an inactive (paused) schedule is not watched


@dataclass(frozen=True)
class Run:
    """One flow run of a deployment, as the Prefect API reports it."""

    name: str                          # "daily-backup" or Prefect's generated "brave-otter"
    state_type: str                    # COMPLETED | FAILED | CRASHED | CANCELLED | RUNNING | SCHEDULED ...
    state_name: str                    # "Completed", "Failed", "TimedOut", "Crashed", "Late" ...
    expected_start: datetime | None    # when it was meant to start (the schedule's fire time)
    end: datetime | None = None        # when it reached its terminal state
    message: str = ""                  # the state message (may be long; never shown whole)


@dataclass(frozen=True)
class Deployment:
    name: str                              # the deployment's name: "daily-backup"
    created: datetime                      # a schedule cannot be missed before this
    schedules: tuple[Schedule, ...] = ()
    grace: timedelta = timedelta(minutes=60)
    paused: bool = False                   # a paused deployment schedules nothing
    runs: tuple[Run, ...] = field(default_factory=tuple)   # recent runs, any order

    @property
    def watched(self) -> bool:
        return not self.paused and any(s.active for s in self.schedules)


def last_fire(schedule: Schedule, at: datetime) -> datetime:
    """The latest fire time of ``schedule`` at or before ``at`` (UTC). Raises ValueError for an
    invalid cron expression or timezone."""
    try:
        zone = ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone '{schedule.timezone}'") from exc
    # cronsim counts whole seconds and, in reverse, yields times strictly before its start.
    start = at.astimezone(zone).replace(microsecond=0) + timedelta(seconds=1)
    try:
        return next(CronSim(schedule.cron, start, reverse=True)).astimezone(UTC)
    except (CronSimError, StopIteration) as exc:
        raise ValueError(f"'{schedule.cron}' is not a usable cron expression: {exc}") from exc


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:g} min"


def _finished_at(run: Run) -> datetime | None:
    return run.end or run.expected_start


def _clean(message: str) -> str:
    """The first line of a state message, trimmed, any URL password replaced by ``***`` (our own
    errors redact DSNs already; a library's exception text may not)."""
    lines = message.strip().splitlines()
    line = _URL_PASSWORD.sub(r"\g<pre>***@", " ".join(lines[0].split()) if lines else "")
    return line if len(line) <= MESSAGE_CHARS else line[:MESSAGE_CHARS - 1] + "…"


def deadman_check(dep: Deployment, now: datetime) -> Check:
    """``deadman:<name>``: did a run succeed for the latest schedule that is past its grace?"""
    name = f"deadman:{dep.name}"
    try:
        fire = max(last_fire(s, now - dep.grace) for s in dep.schedules if s.active)
    except ValueError as exc:
        return Check(name, SERVICE, Status.UNKNOWN, None, "", f"cannot judge {dep.name}: {exc}")
    successes = [r for r in dep.runs if r.state_type == COMPLETED and _finished_at(r) is not None]
    last_ok = max((_finished_at(r) for r in successes), default=None)
    age = (now - last_ok).total_seconds() if last_ok else None
    last_text = f"last success {_utc(last_ok)}" if last_ok else f"no success in the last {len(dep.runs)} runs"
    if dep.created > fire:
        return Check(name, SERVICE, Status.OK, age, "s",
                     f"{dep.name} not due yet: created {_utc(dep.created)}, after its {_utc(fire)} schedule "
                     f"(grace {_minutes(dep.grace)})")
    if any(r.expected_start is not None and r.expected_start >= fire for r in successes):
        return Check(name, SERVICE, Status.OK, age, "s",
                     f"{dep.name} succeeded for its {_utc(fire)} schedule; {last_text}")
    since = sorted((r for r in dep.runs if r.expected_start is not None and r.expected_start >= fire),
                   key=lambda r: r.expected_start)
    latest = f"; the run since is {since[-1].state_name}" if since else ""
    return Check(name, SERVICE, Status.CRITICAL, age, "s",
                 f"no successful run of {dep.name} since its {_utc(fire)} schedule "
                 f"(grace {_minutes(dep.grace)}); {last_text}{latest}")


def run_check(dep: Deployment) -> Check:
    """``run:<name>``: the most recent finished (not cancelled) run failed or succeeded."""
    name = f"run:{dep.name}"
    finished = [r for r in dep.runs if r.state_type in _DECIDING and _finished_at(r) is not None]
    if not finished:
        return Check(name, SERVICE, Status.OK, None, "", f"{dep.name} has no finished run yet")
    latest = max(finished, key=_finished_at)
    when = _utc(_finished_at(latest))
    if latest.state_type in _FAILURES:
        message = _clean(latest.message)
        return Check(name, SERVICE, Status.CRITICAL, None, "",
                     f"run {latest.name} of {dep.name} {latest.state_name} at {when}"
                     + (f": {message}" if message else ""))
    return Check(name, SERVICE, Status.OK, None, "", f"run {latest.name} of {dep.name} Completed at {when}")


def plan_checks(deployments: Iterable[Deployment], now: datetime) -> list[Check]:
    """Both checks for every deployment (the dead-man's switch only where a schedule is active),
    in name order."""
    checks: list[Check] = []
    for dep in sorted(deployments, key=lambda d: d.name):
        if dep.watched:
            checks.append(deadman_check(dep, now))
        checks.append(run_check(dep))
    return checks
