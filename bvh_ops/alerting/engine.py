"""The alerter: rules evaluated on every probe cycle, the event journal, incidents and the
notification log (the outbox), kept in memory and written through to the ops database.

Memory is the authority while the process runs; the ops database is its durable copy. A
monitor that starts with the ops database loads the states, the journal, the unsent messages
and the open incidents from it (a restart neither re-sends nor drops a notification, and an
alert that was firing gets its resolved notice when the service is found well again). Without
the ops database the alerter still evaluates and delivers (an outage of the history is no
reason to stay silent about the platform), and writes everything through once it returns.

Delivery is not done here: ``observe`` only queues messages; ``delivery.Deliverer`` sends them
from its own threads, so a slow SMTP server never delays the probes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from bvh_ops.alerting import routing
from bvh_ops.alerting.rules import DEFAULT_INHIBITIONS, DEFAULT_RULES, Inhibition, Rule, Severity
from bvh_ops.alerting.state import AlertState, Event, Phase, Silence, evaluate
from bvh_ops.monitoring.results import Check

# The journal is kept this far back (routing's batches look back a day, the digest a day).
JOURNAL_DAYS = 2
# A channel's own health check: the alert about a failing channel is delivered on the others.
CHANNEL_CHECK_PREFIX = "alerting.channel:"


@dataclass
class Notification:
    """One message in the notification log: pending until delivered (or abandoned)."""

    message: routing.Message
    created_at: datetime
    next_attempt_at: datetime
    status: str = "pending"          # pending | sent | abandoned
    attempts: int = 0
    last_error: str | None = None
    sent_at: datetime | None = None


@dataclass
class Incident:
    """One critical episode: from the fired event to the resolved one."""

    fingerprint: str
    name: str
    service: str
    check: str
    started_at: datetime
    fired_detail: str = ""
    ended_at: datetime | None = None
    resolved_detail: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Snapshot:
    """What a persistence hands the alerter at start."""

    states: dict[str, AlertState] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    notifications: dict[str, Notification] = field(default_factory=dict)
    incidents: dict[str, Incident] = field(default_factory=dict)   # open ones, by fingerprint
    silences: list[Silence] = field(default_factory=list)


@dataclass
class Changes:
    """What one cycle changed: the persistence writes exactly this (idempotent upserts)."""

    states: dict[str, AlertState] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    notifications: dict[str, Notification] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)

    def merge(self, other: Changes) -> None:
        self.states.update(other.states)
        self.events += other.events
        self.notifications.update(other.notifications)
        self.incidents += other.incidents

    def __bool__(self) -> bool:
        return bool(self.states or self.events or self.notifications or self.incidents)


@dataclass(frozen=True)
class Outcome:
    events: list[Event]
    queued: list[routing.Message]
    opened: list[Incident]
    closed: list[Incident]


class Alerter:
    """Rules -> states -> events -> queued messages, one ``observe`` per probe cycle."""

    def __init__(self, channels: Sequence[str], *, rules: Sequence[Rule] = DEFAULT_RULES,
                 inhibitions: Sequence[Inhibition] = DEFAULT_INHIBITIONS, digest_at: time = routing.DEFAULT_DIGEST_AT,
                 digest_lines: Callable[[datetime, datetime], Sequence[str]] | None = None,
                 snapshot: Snapshot | None = None) -> None:
        snap = snapshot or Snapshot()
        self.channels = list(channels)
        self.rules = list(rules)
        self.inhibitions = list(inhibitions)
        self.digest_at = digest_at
        self.digest_lines = digest_lines
        self.states: dict[str, AlertState] = dict(snap.states)
        self.events: list[Event] = sorted(snap.events, key=lambda e: e.at)
        self.notifications: dict[str, Notification] = dict(snap.notifications)
        self.incidents: dict[str, Incident] = dict(snap.incidents)
        self.silences: list[Silence] = list(snap.silences)
        self.lock = threading.RLock()          # observe and the delivery threads share the log
        self.queued = threading.Condition(self.lock)   # notified when messages are queued
        self.unsaved = Changes()               # what the persistence has not written yet

    # -- evaluation --------------------------------------------------------------------------
    def observe(self, checks: Iterable[Check], now: datetime) -> Outcome:
        """One probe cycle: step every rule, journal the events, open/close incidents, and
        queue every message now due that the log does not hold yet."""
        with self.lock:
            old = self.states
            new, events = evaluate(old, self.rules, list(checks), now, silences=self.silences,
                                   inhibitions=self.inhibitions)
            # Only what changed is written; an inactive alert is no alert (missing = inactive), so
            # 200 endpoints x the rules watching them cost nothing while all is well.
            changed = {fp: st for fp, st in new.items() if _essence(st) != _essence(old.get(fp))
                       and not (st.phase is Phase.INACTIVE and fp not in old)}
            self.states = {fp: st for fp, st in new.items() if st.phase is not Phase.INACTIVE}
            changes = Changes(states=changed, events=list(events))
            self.events += events
            opened, closed = self._incidents(events)
            changes.incidents = opened + closed
            queued = self._queue(now, changes)
            self._prune(now)
            self.unsaved.merge(changes)
            if queued:
                self.queued.notify_all()
            return Outcome(events, queued, opened, closed)

    def _incidents(self, events: Sequence[Event]) -> tuple[list[Incident], list[Incident]]:
        opened, closed = [], []
        for ev in events:
            a = ev.alert
            if a.severity is not Severity.CRITICAL or ev.inhibited:
                continue   # an inhibited critical is a consequence of another incident
            if ev.kind == "fired" and a.fingerprint not in self.incidents:
                inc = Incident(a.fingerprint, a.name, a.service, a.check, ev.since or ev.at, a.detail)
                self.incidents[a.fingerprint] = inc
                opened.append(inc)
            elif ev.kind == "resolved" and (inc := self.incidents.pop(a.fingerprint, None)) is not None:
                inc.ended_at, inc.resolved_detail = ev.since or ev.at, a.detail
                closed.append(inc)
        return opened, closed

    def _queue(self, now: datetime, changes: Changes) -> list[routing.Message]:
        kwargs = {}
        if self.digest_lines is not None:
            start, end = routing.digest_window(now, self.digest_at)
            owed = now - end <= routing.DIGEST_CATCHUP
            if owed and any(routing.digest_key(ch, end) not in self.notifications for ch in self.channels):
                kwargs["digest_lines"] = list(self.digest_lines(start, end))
        due = routing.due(self.notifications.keys(), self.events, now, channels=self.channels,
                          digest_at=self.digest_at, **kwargs)
        out = []
        for m in due:
            if _about_itself(m):
                continue
            n = Notification(m, now, now)
            self.notifications[m.key] = n
            changes.notifications[m.key] = n
            out.append(m)
        return out

    def _prune(self, now: datetime) -> None:
        horizon = now - timedelta(days=JOURNAL_DAYS)
        firing = {fp for fp, s in self.states.items() if s.phase is Phase.FIRING}
        self.states = {fp: s for fp, s in self.states.items() if s.phase is not Phase.RESOLVED or s.since >= horizon}
        # Keep the fired event of every alert still firing, however old (its episode is open).
        self.events = [e for e in self.events if e.at >= horizon or e.alert.fingerprint in firing]
        self.notifications = {k: n for k, n in self.notifications.items()
                              if n.status == "pending" or n.created_at >= horizon}

    # -- what the delivery threads use -------------------------------------------------------
    def pending(self, channel: str, now: datetime) -> list[Notification]:
        """The channel's messages due for an attempt, criticals first, oldest first."""
        rank = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
        with self.lock:
            due = [n for n in self.notifications.values()
                   if n.status == "pending" and n.message.channel == channel and n.next_attempt_at <= now]
        return sorted(due, key=lambda n: (rank[n.message.severity], n.created_at))

    def next_due(self, channel: str) -> datetime | None:
        with self.lock:
            times = [n.next_attempt_at for n in self.notifications.values()
                     if n.status == "pending" and n.message.channel == channel]
        return min(times, default=None)

    def record_attempt(self, n: Notification, **fields: object) -> None:
        with self.lock:
            for k, v in fields.items():
                setattr(n, k, v)
            self.unsaved.notifications[n.message.key] = n

    # -- operators ---------------------------------------------------------------------------
    def set_silences(self, silences: Sequence[Silence]) -> None:
        with self.lock:
            self.silences = list(silences)

    def take_unsaved(self) -> Changes:
        with self.lock:
            out, self.unsaved = self.unsaved, Changes()
            return out

    def give_back(self, changes: Changes) -> None:
        """A write that failed: keep it for the next attempt (newer changes win)."""
        with self.lock:
            newer = self.unsaved
            changes.merge(newer)
            self.unsaved = changes

    def everything(self) -> Changes:
        """The whole memory, for a persistence that attaches late (all writes are upserts)."""
        with self.lock:
            return Changes(dict(self.states), list(self.events), dict(self.notifications),
                           list(self.incidents.values()))

    def firing(self) -> list[AlertState]:
        with self.lock:
            return sorted((s for s in self.states.values() if s.phase in (Phase.FIRING, Phase.PENDING)),
                          key=lambda s: (s.alert.severity != Severity.CRITICAL, s.since))


def _essence(state: AlertState | None) -> tuple | None:
    """What a persisted state must reflect."""
    if state is None:
        return None
    # The bad-sample count only matters while pending (towards fire_after), the good one while
    # firing (towards resolve_after): a steady firing alert is not rewritten every cycle.
    bad = state.bad if state.phase is Phase.PENDING else 0
    good, good_since = (state.good, state.good_since) if state.phase is Phase.FIRING else (0, None)
    return (state.alert, state.phase, state.since, bad, good, state.silenced, state.inhibited,
            state.bad_since, good_since)


def _about_itself(m: routing.Message) -> bool:
    """The alert about a failing channel is not sent through that channel."""
    return bool(m.alerts) and all(a.check == f"{CHANNEL_CHECK_PREFIX}{m.channel}" for a in m.alerts)


def channel_check_name(channel: str) -> str:
    return f"{CHANNEL_CHECK_PREFIX}{channel}"
