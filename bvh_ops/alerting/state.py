"""The alert state machine (pure, ``now`` passed in): per fingerprint
``inactive -> pending -> firing -> resolved`` (and back to pending on the next bad sample).

A bad sample moves inactive/resolved to pending; ``fire_after`` consecutive bad samples fire;
while firing, ``resolve_after`` consecutive good samples resolve (a bad one resets the count).
A pending alert that sees a good sample goes back to inactive (it never fired: no notice).
A check missing from a cycle is no sample: its alert keeps its state.

Silenced and inhibited alerts change state like any other; their events carry the flags and
routing decides what that means for delivery. A firing alert whose silence expires (or whose
inhibitor clears) gets a new, unmuted fired event: it is notified then, not never.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase

from bvh_ops.alerting.rules import DEFAULT_INHIBITIONS, Inhibition, Rule, Severity, fingerprint
from bvh_ops.monitoring.results import Check


class Phase(enum.StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """What a notification is about; never carries a secret (a check's detail does not)."""

    fingerprint: str
    name: str                 # the rule's name
    severity: Severity
    service: str
    check: str
    labels: tuple[tuple[str, str], ...] = ()
    detail: str = ""          # the latest sample's detail


@dataclass(frozen=True)
class AlertState:
    alert: Alert
    phase: Phase
    since: datetime           # when this phase began
    bad: int = 0              # consecutive bad samples
    good: int = 0             # consecutive good samples
    silenced: bool = False
    inhibited: bool = False
    bad_since: datetime | None = None    # the first bad sample of the current bad streak
    good_since: datetime | None = None   # the first good sample of the current good streak


@dataclass(frozen=True)
class Silence:
    """Mutes notifications of matching alerts (globs) until ``until`` (exclusive)."""

    until: datetime
    name: str = "*"
    service: str = "*"
    check: str = "*"
    comment: str = ""
    fingerprint: str | None = None    # one alert exactly (a prefix is enough)

    def matches(self, alert: Alert, now: datetime) -> bool:
        if self.fingerprint is not None and not alert.fingerprint.startswith(self.fingerprint):
            return False
        return (now < self.until and fnmatchcase(alert.name, self.name)
                and fnmatchcase(alert.service, self.service) and fnmatchcase(alert.check, self.check))


@dataclass(frozen=True)
class Event:
    kind: str                 # "fired" | "resolved"
    alert: Alert
    at: datetime
    silenced: bool = False
    inhibited: bool = False
    # When the fault began (fired: its first bad sample) or ended (resolved: its first good
    # sample): what incidents record, so they agree with the uptime report's outages.
    since: datetime | None = None


States = Mapping[str, AlertState]


def evaluate(states: States, rules: Sequence[Rule], checks: Iterable[Check], now: datetime, *,
             silences: Sequence[Silence] = (),
             inhibitions: Sequence[Inhibition] = DEFAULT_INHIBITIONS) -> tuple[dict[str, AlertState], list[Event]]:
    """One probe cycle: every rule against every check it watches. Returns the new states (the
    input is not changed) and the fired/resolved events of this cycle."""
    new = dict(states)
    stepped: list[str] = []
    for check in checks:
        for rule in rules:
            if not rule.matcher.watches(check):
                continue
            fp = fingerprint(rule.name, check.service, check.name)
            name = check.detail.split("\n", 1)[0][:120] if rule.name_from_detail and check.detail else rule.name
            alert = Alert(fp, name, rule.severity, check.service, check.name, rule.labels, check.detail)
            old = new.get(fp) or AlertState(alert, Phase.INACTIVE, now)
            new[fp] = _step(replace(old, alert=alert), rule, rule.matcher.is_bad(check), now)
            stepped.append(fp)
    # Flags after every step, so a source that fires in this cycle already mutes its targets.
    events = []
    for fp in stepped:
        state = new[fp]
        flagged = replace(state, silenced=any(s.matches(state.alert, now) for s in silences),
                          inhibited=_inhibited(state.alert, new.values(), inhibitions))
        new[fp] = flagged
        old = states.get(fp)
        was_firing = old is not None and old.phase is Phase.FIRING
        if flagged.phase is Phase.FIRING and not was_firing:
            events.append(Event("fired", flagged.alert, now, flagged.silenced, flagged.inhibited, flagged.bad_since))
        elif (flagged.phase is Phase.FIRING and old is not None and (old.silenced or old.inhibited)
              and not (flagged.silenced or flagged.inhibited)):
            # Still firing when its silence expired or its inhibitor cleared: notify it now
            # (its first fired event was muted), as Alertmanager does.
            events.append(Event("fired", flagged.alert, now, since=flagged.bad_since))
        elif flagged.phase is Phase.RESOLVED and was_firing:
            events.append(Event("resolved", flagged.alert, now, flagged.silenced, flagged.inhibited,
                                flagged.good_since))
    return new, events


def _step(state: AlertState, rule: Rule, bad: bool, now: datetime) -> AlertState:
    if bad:
        state = replace(state, bad_since=state.bad_since if state.bad else now, good_since=None)
    else:
        state = replace(state, good_since=state.good_since if state.good else now,
                        bad_since=state.bad_since if state.phase is Phase.FIRING else None)
    phase = state.phase
    if bad:
        count = state.bad + 1
        if phase is Phase.FIRING:
            return replace(state, bad=count, good=0)
        if count >= rule.fire_after:
            return replace(state, phase=Phase.FIRING, since=now, bad=count, good=0)
        since = now if phase is not Phase.PENDING else state.since
        return replace(state, phase=Phase.PENDING, since=since, bad=count, good=0)
    good = state.good + 1
    if phase is Phase.FIRING:
        if good >= rule.resolve_after:
            return replace(state, phase=Phase.RESOLVED, since=now, bad=0, good=good)
        return replace(state, bad=0, good=good)
    if phase is Phase.PENDING:
        return replace(state, phase=Phase.INACTIVE, since=now, bad=0, good=good)
    return replace(state, bad=0, good=good)


def _inhibited(alert: Alert, states: Iterable[AlertState], inhibitions: Sequence[Inhibition]) -> bool:
    for inh in inhibitions:
        if alert.severity is not inh.target_severity or not fnmatchcase(alert.service, inh.target_service):
            continue
        if any(s.phase is Phase.FIRING and s.alert.severity is inh.source_severity
               and fnmatchcase(s.alert.check, inh.source_check) and s.alert.fingerprint != alert.fingerprint
               for s in states):
            return True
    return False
