"""Delivery: one thread per channel sends that channel's queued messages, so a slow or dead SMTP
server delays neither the probes nor the other channels.

A failed attempt is retried with backoff (15 s, 30 s, 1 min, 2 min, then every 5 min); a
message still undelivered after a day is abandoned (kept in the log with its last error). A
channel that failed ``FAILING_AFTER`` attempts in a row reports a critical
``alerting.channel:<name>`` check, which the alerter turns into an alert delivered on the other
channels (never on the failing one).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bvh_ops.alerting.channels.base import Channel, ChannelError
from bvh_ops.alerting.engine import Alerter, Notification, channel_check_name
from bvh_ops.monitoring.results import Check, Status

log = logging.getLogger("bvh_ops.alerting.delivery")

BACKOFF_SECONDS = (15, 30, 60, 120, 300)
GIVE_UP_AFTER = timedelta(days=1)
FAILING_AFTER = 3
# How often an idle delivery thread looks for retries that became due.
POLL_SECONDS = 1.0


def next_attempt(attempts: int, now: datetime) -> datetime:
    """When to try again after ``attempts`` failed attempts (pure)."""
    return now + timedelta(seconds=BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS)) - 1])


@dataclass
class ChannelHealth:
    failures_in_a_row: int = 0
    last_error: str = ""
    last_sent: datetime | None = None


class Deliverer:
    def __init__(self, alerter: Alerter, channels: Sequence[Channel], *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 recorded: Callable[[], object] | None = None) -> None:
        self.alerter = alerter
        self.recorded = recorded or (lambda: None)   # write the log through after each attempt
        self.channels = {c.name: c for c in channels}
        self.clock = clock
        self.health = {name: ChannelHealth() for name in self.channels}
        self._stop = threading.Event()
        self._channel_locks = {name: threading.Lock() for name in self.channels}
        self._threads: list[threading.Thread] = []

    def deliver(self, name: str, now: datetime | None = None, *, stop: threading.Event | None = None) -> int:
        """Attempt every message of channel ``name`` due at ``now``; returns how many were sent.
        Stops at the first failure (the channel is down: the rest waits for the backoff). One
        caller per channel at a time (a message is never sent twice by two threads)."""
        with self._channel_locks[name]:
            try:
                return self._deliver(name, now, stop or self._stop)
            finally:
                self.recorded()   # a crash after a send must not send it again

    def _deliver(self, name: str, now: datetime | None, stop: threading.Event) -> int:
        channel, health = self.channels[name], self.health[name]
        sent = 0
        for n in self.alerter.pending(name, now or self.clock()):
            if stop.is_set():
                break
            try:
                channel.send(n.message)
            except ChannelError as exc:
                self._failed(n, health, str(exc))
                for rest in self.alerter.pending(name, now or self.clock()):
                    if rest is not n:   # the channel is down: the others wait for its backoff
                        self.alerter.record_attempt(rest, next_attempt_at=n.next_attempt_at)
                break
            except Exception as exc:  # noqa: BLE001 - a channel bug must not kill the thread
                self._failed(n, health, f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
                break
            at = self.clock()
            self.alerter.record_attempt(n, status="sent", attempts=n.attempts + 1, sent_at=at, last_error=None)
            health.failures_in_a_row, health.last_sent = 0, at
            sent += 1
            self.recorded()
        return sent

    def _failed(self, n: Notification, health: ChannelHealth, error: str) -> None:
        at = self.clock()
        attempts = n.attempts + 1
        health.failures_in_a_row += 1
        health.last_error = error
        if at - n.created_at >= GIVE_UP_AFTER:
            self.alerter.record_attempt(n, status="abandoned", attempts=attempts, last_error=error)
            log.error("abandoned after %d attempts: %s (%s)", attempts, n.message.subject, error)
        else:
            self.alerter.record_attempt(n, attempts=attempts, last_error=error,
                                        next_attempt_at=next_attempt(attempts, at))
            log.warning("delivery failed (attempt %d): %s", attempts, error)

    def health_checks(self) -> list[Check]:
        """One check per channel: critical once it failed FAILING_AFTER attempts in a row."""
        out = []
        for name, h in self.health.items():
            if h.failures_in_a_row >= FAILING_AFTER:
                out.append(Check(channel_check_name(name), "alerting", Status.CRITICAL, h.failures_in_a_row,
                                 "attempts", f"{h.failures_in_a_row} failed attempts in a row: {h.last_error}"))
            else:
                out.append(Check(channel_check_name(name), "alerting", Status.OK, h.failures_in_a_row, "attempts"))
        return out

    def deliver_all(self, timeout: float) -> dict[str, int]:
        """Everything due now on every channel, the channels in parallel, within ``timeout``
        seconds (one-shot commands). A channel still sending at the timeout keeps its messages
        pending (they are in the log; the next run retries them)."""
        counts: dict[str, int] = {}
        done = threading.Event()

        def one(name: str) -> None:
            counts[name] = self.deliver(name, stop=done)

        threads = [threading.Thread(target=one, args=(name,), daemon=True) for name in self.channels]
        for t in threads:
            t.start()
        end = self.clock().timestamp() + timeout
        for t in threads:
            t.join(max(0.0, end - self.clock().timestamp()))
        done.set()   # a channel still sending stops after its attempt in flight
        return counts

    # -- background ----------------------------------------------------------------------------
    def start(self) -> None:
        for name in self.channels:
            t = threading.Thread(target=self._loop, args=(name,), name=f"deliver-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _loop(self, name: str) -> None:
        while not self._stop.is_set():
            self.deliver(name)
            with self.alerter.queued:
                if not self._stop.is_set() and not self.alerter.pending(name, self.clock()):
                    self.alerter.queued.wait(POLL_SECONDS)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the attempts in flight (each bounded by the channel's timeout)."""
        self._stop.set()
        with self.alerter.queued:
            self.alerter.queued.notify_all()
        for t in self._threads:
            t.join(timeout)
