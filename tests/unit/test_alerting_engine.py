"""The alerter and its delivery, with an injected clock: fault -> critical on every channel ->
resolved notice; restart without duplicates; hourly batches; silences; inhibition; escalation
of a failing channel. The channels here record what they are given (the real SMTP/HTTP
channels are tested against real servers in tests/integration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bvh_ops.alerting.channels.base import ChannelError
from bvh_ops.alerting.delivery import FAILING_AFTER, Deliverer, next_attempt
from bvh_ops.alerting.engine import Alerter, Snapshot
from bvh_ops.alerting.state import Silence
from bvh_ops.monitoring.results import Check, Status

T0 = datetime(2026, 11, 28, 14, 0, 5, tzinfo=UTC)
STEP = timedelta(seconds=30)


@dataclass
class Recorder:
    name: str
    fail: bool = False
    sent: list = field(default_factory=list)
    tried: int = 0

    def send(self, message):
        self.tried += 1
        if self.fail:
            raise ChannelError(f"{self.name}: refused")
        self.sent.append(message)


def api(status: Status) -> Check:
    return Check("api-health", "api", status, detail="GET /api/health: 503" if status is Status.CRITICAL else "")


def db(status: Status) -> Check:
    return Check("database.reachable", "database", status)


class Clock:
    def __init__(self, at=T0):
        self.at = at

    def __call__(self):
        return self.at


def setup(*names, fail=(), snapshot=None):
    chans = [Recorder(n, fail=n in fail) for n in names]
    alerter = Alerter(names, snapshot=snapshot)
    clock = Clock()
    return alerter, Deliverer(alerter, chans, clock=clock), {c.name: c for c in chans}, clock


def cycle(alerter, deliverer, clock, *checks):
    out = alerter.observe([*checks, *deliverer.health_checks()], clock.at)
    for name in deliverer.channels:
        deliverer.deliver(name)
    clock.at += STEP
    return out


def test_fault_to_critical_on_every_channel_then_resolved_notice():
    alerter, deliverer, chans, clock = setup("email", "sms", "webhook")
    cycle(alerter, deliverer, clock, api(Status.CRITICAL))           # 1st bad sample: pending
    assert all(not c.sent for c in chans.values())
    cycle(alerter, deliverer, clock, api(Status.CRITICAL))           # 2nd: fires (fire_after=2)
    for c in chans.values():
        assert [m.kind for m in c.sent] == ["fired"]
        assert "system down" in c.sent[0].subject and "api-health" in c.sent[0].subject
    fired_at = T0 + STEP
    assert fired_at - T0 <= timedelta(minutes=2)                   # fault -> delivered, in clock time
    for _ in range(5):
        cycle(alerter, deliverer, clock, api(Status.CRITICAL))       # still firing: nothing new
    assert all(len(c.sent) == 1 for c in chans.values())
    cycle(alerter, deliverer, clock, api(Status.OK))
    out = cycle(alerter, deliverer, clock, api(Status.OK))            # resolve_after=2
    assert [e.kind for e in out.events] == ["resolved"] and len(out.closed) == 1
    assert out.closed[0].duration_seconds == 7 * 30
    for c in chans.values():
        assert [m.kind for m in c.sent] == ["fired", "resolved"]


def test_a_restart_mid_incident_neither_resends_nor_drops():
    alerter, deliverer, chans, clock = setup("email", "webhook", fail=("webhook",))
    cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    assert len(chans["email"].sent) == 1 and chans["webhook"].sent == []   # webhook down: pending
    saved = alerter.everything()
    snap = Snapshot({k: v for k, v in saved.states.items()}, saved.events, saved.notifications,
                    {i.fingerprint: i for i in saved.incidents if i.ended_at is None})
    # The monitor restarts (a new process); the webhook is back; the service recovered meanwhile.
    alerter2, deliverer2, chans2, clock2 = setup("email", "webhook", snapshot=snap)
    clock2.at = clock.at + timedelta(minutes=5)
    cycle(alerter2, deliverer2, clock2, api(Status.OK))
    cycle(alerter2, deliverer2, clock2, api(Status.OK))
    assert [m.kind for m in chans2["email"].sent] == ["resolved"]           # no second "fired"
    assert [m.kind for m in chans2["webhook"].sent] == ["fired", "resolved"]  # the pending one, then resolved


def test_warnings_of_one_hour_arrive_as_one_message_per_channel():
    alerter, deliverer, chans, clock = setup("email", "webhook")
    clock.at = datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC)
    cpu = Check("host.cpu", "host", Status.WARNING)
    mem = Check("host.memory", "host", Status.WARNING)
    for _ in range(3):
        cycle(alerter, deliverer, clock, cpu, mem)
    for _ in range(10):
        cycle(alerter, deliverer, clock, Check("host.cpu", "host", Status.OK), mem)
    assert all(not c.sent for c in chans.values())   # nothing before the hour closes
    clock.at = datetime(2026, 11, 28, 15, 0, 10, tzinfo=UTC)
    cycle(alerter, deliverer, clock, mem)
    cycle(alerter, deliverer, clock, mem)
    for c in chans.values():
        (batch,) = c.sent
        assert batch.kind == "batch" and "2 warning(s)" in batch.subject
        assert any("high CPU" in line for line in batch.lines) and any("high memory" in line for line in batch.lines)


def test_a_silence_suppresses_then_expires():
    alerter, deliverer, chans, clock = setup("email")
    alerter.set_silences([Silence(until=T0 + timedelta(minutes=3), service="api", comment="deploy")])
    for _ in range(4):
        cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    assert chans["email"].sent == []
    state = next(iter(alerter.states.values()))
    assert state.phase == "firing" and state.silenced      # listed, marked silenced
    for _ in range(4):                                      # the silence ends at +3 min
        cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    assert [m.kind for m in chans["email"].sent] == ["fired"]


def test_database_down_inhibits_its_warnings():
    alerter, deliverer, chans, clock = setup("email")
    slow = Check("database.connections", "database", Status.WARNING)
    clock.at = datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC)
    for _ in range(4):
        cycle(alerter, deliverer, clock, db(Status.CRITICAL), slow)
    degraded = [s for s in alerter.states.values()
                if s.alert.name == "database degraded" and s.alert.check == "database.connections"]
    assert degraded and degraded[0].phase == "firing" and degraded[0].inhibited
    clock.at = datetime(2026, 11, 28, 15, 0, 5, tzinfo=UTC)
    cycle(alerter, deliverer, clock, db(Status.CRITICAL), slow)
    assert [m.kind for m in chans["email"].sent] == ["fired"]      # only the critical: no warning batch


def test_without_the_inhibitor_the_same_warning_is_batched():
    alerter, deliverer, chans, clock = setup("email")
    slow = Check("database.connections", "database", Status.WARNING)
    clock.at = datetime(2026, 11, 28, 14, 0, 0, tzinfo=UTC)
    for _ in range(4):
        cycle(alerter, deliverer, clock, db(Status.OK), slow)
    clock.at = datetime(2026, 11, 28, 15, 0, 5, tzinfo=UTC)
    cycle(alerter, deliverer, clock, db(Status.OK), slow)
    assert [m.kind for m in chans["email"].sent] == ["batch"]


def test_a_failing_channel_backs_off_then_escalates_to_the_others():
    alerter, deliverer, chans, clock = setup("email", "webhook", fail=("email",))
    cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    assert chans["email"].tried == 1
    cycle(alerter, deliverer, clock, api(Status.CRITICAL))        # 30 s later: backoff (15 s) passed
    assert chans["email"].tried == 2
    for _ in range(12):
        cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    assert FAILING_AFTER <= chans["email"].tried < 12             # backoff, not one try per cycle
    webhook_subjects = [m.subject for m in chans["webhook"].sent]
    assert any("notification channel failing" in s and "alerting.channel:email" in s for s in webhook_subjects)
    assert not any("alerting.channel" in m.subject for m in chans["email"].sent)
    pending = alerter.pending("email", clock.at + timedelta(hours=1))
    assert pending and all(n.last_error == "email: refused" for n in pending)


def test_backoff_grows_and_caps():
    gaps = [(next_attempt(n, T0) - T0).total_seconds() for n in (1, 2, 3, 4, 5, 9)]
    assert gaps == [15, 30, 60, 120, 300, 300]


def test_only_changed_states_are_written_and_inactive_ones_are_not_kept():
    alerter, deliverer, _, clock = setup("email")
    healthy = [api(Status.OK), db(Status.OK), Check("host.cpu", "host", Status.OK)]
    cycle(alerter, deliverer, clock, *healthy)
    alerter.take_unsaved()
    for _ in range(3):
        cycle(alerter, deliverer, clock, *healthy)
    assert alerter.states == {} and not alerter.take_unsaved().states
    cycle(alerter, deliverer, clock, api(Status.CRITICAL), *healthy[1:])
    assert [s.phase for s in alerter.take_unsaved().states.values()] == ["pending"]


def test_a_steady_firing_alert_is_not_rewritten_every_cycle():
    alerter, deliverer, _, clock = setup("email")
    for _ in range(3):
        cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    alerter.take_unsaved()
    for _ in range(5):
        cycle(alerter, deliverer, clock, api(Status.CRITICAL))
    assert not [s for s in alerter.take_unsaved().states.values() if s.alert.check == "api-health"]
