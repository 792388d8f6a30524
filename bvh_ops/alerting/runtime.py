"""Alerting wired for a process that probes (``bvh-ops monitor``, the monitoring flow, one
``bvh-ops health-check``): channels from ``[alerting]``, the alerter loaded from the ops
database, delivery threads, and ``after_cycle`` called with every probe cycle."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bvh_ops.alerting.channels.base import Channel
from bvh_ops.alerting.channels.registry import channels_from
from bvh_ops.alerting.delivery import Deliverer
from bvh_ops.alerting.digest import gather_digest, render_digest
from bvh_ops.alerting.engine import Alerter, Incident
from bvh_ops.alerting.state import Event
from bvh_ops.alerting.store import EvaluatorBusy, Persistence
from bvh_ops.config import Settings
from bvh_ops.monitoring.cycle import CycleResult

log = logging.getLogger("bvh_ops.alerting")


@dataclass(frozen=True)
class CycleAlerts:
    events: list[Event]
    queued: int
    closed: list[Incident]
    problem: str | None          # why alert state is not persisted (None: it is)
    firing: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{e.kind} {e.alert.severity} '{e.alert.name}' ({e.alert.service}/{e.alert.check})"
                 + (" [silenced]" if e.silenced else "") + (" [inhibited]" if e.inhibited else "")
                 for e in self.events]
        if self.queued:
            parts.append(f"{self.queued} notification(s) queued")
        return "; ".join(parts)


class AlertingRuntime:
    def __init__(self, alerter: Alerter, deliverer: Deliverer, persistence: Persistence | None,
                 *, note: str | None = None) -> None:
        self.alerter = alerter
        self.deliverer = deliverer
        self.persistence = persistence
        self.note = note               # said once at start: no channel, or another evaluator

    @classmethod
    def start(cls, settings: Settings, ops_dsn: Callable[[], str | None], *, now: datetime | None = None,
              channels: Sequence[Channel] | None = None, background: bool = True,
              digest_lines: Callable[[datetime, datetime], Sequence[str]] | None = None,
              clock: Callable[[], datetime] | None = None) -> AlertingRuntime | None:
        """None when another process evaluates the alerts (its note is the reason to print)."""
        now = now or datetime.now(UTC)
        chans = list(channels_from(settings.alerting) if channels is None else channels)
        persistence = Persistence(ops_dsn)
        try:
            snapshot = persistence.open(now)
        except EvaluatorBusy:
            return None
        if digest_lines is None:
            digest_lines = _digest_provider(settings, ops_dsn)
        alerter = Alerter([c.name for c in chans], digest_at=settings.alerting.digest_at, digest_lines=digest_lines,
                          snapshot=snapshot)
        clock = clock or (lambda: datetime.now(UTC))
        deliverer = Deliverer(alerter, chans, clock=clock, recorded=lambda: persistence.sync(alerter, clock()))
        if background:
            deliverer.start()
        note = None if chans else "alerting: no channel configured ([alerting] in bvh-ops.toml): alerts are " \
                                  "evaluated and kept, none is sent"
        return cls(alerter, deliverer, persistence, note=note)

    def after_cycle(self, result: CycleResult) -> CycleAlerts:
        findings = self.persistence.finding_checks(result.checked_at) if self.persistence else []
        checks = [*result.checks, *findings, *self.deliverer.health_checks()]
        outcome = self.alerter.observe(checks, result.checked_at)
        problem = self.persistence.sync(self.alerter, result.checked_at) if self.persistence else None
        return CycleAlerts(outcome.events, len(outcome.queued), outcome.closed, problem)

    def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop delivering: the attempts in flight finish, then what is due now gets one more
        bounded pass (a monitor stopped right after a fault still sends it); whatever is left
        stays pending in the log for the next run."""
        self.deliverer.stop()
        if drain_seconds > 0:
            self.deliverer.deliver_all(drain_seconds)
        if self.persistence:
            self.persistence.sync(self.alerter, self.deliverer.clock())
            self.persistence.close()


def _digest_provider(settings: Settings, ops_dsn: Callable[[], str | None]):
    """The daily summary's facts (backups, drills, incidents, uptime, business numbers), gathered
    once a day when the digest is owed; a failure to gather is said in the digest, never fatal."""

    def lines(start: datetime, end: datetime) -> list[str]:
        try:
            return render_digest(gather_digest(settings, start, end, ops_dsn=ops_dsn()), start, end)
        except Exception as exc:  # noqa: BLE001 - the digest still goes out, saying what is missing
            log.exception("daily summary facts could not be gathered")
            return [f"The day's facts could not be gathered: {type(exc).__name__} (see the monitor's log)"]

    return lines
