"""The monitor loop: a probe cycle every interval, each recorded into the ops database, the
rollup once per hour and retention once per day; stops between cycles when told to.

The history is best effort by design: the ops database being down (or not started) must never
stop the probes — the cycle still runs and is reported, with the reason the history is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import psycopg

from bvh_ops.dsn import scrub
from bvh_ops.errors import BvhOpsError
from bvh_ops.monitoring import store
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.conn import connect

NOT_RUNNING = "ops database not running (set ops_database_url, or run `bvh-ops opsdb start`)"


@dataclass
class History:
    """The sample history as the loop sees it: connected (and migrated) on first use, dropped
    after any failure and reconnected on the next cycle."""

    dsn: Callable[[], str | None]   # where the ops database runs now; None: not running
    conn: psycopg.Connection | None = None
    rolled_up: datetime | None = None    # the hour of the last rollup
    retained: date | None = None         # the day of the last retention run
    maintenance: list[str] = field(default_factory=list)  # what the last record() did besides insert
    connected_to: str | None = field(default=None, repr=False)  # a secret: scrubbed from every reason

    def record(self, cycle: CycleResult, now: datetime) -> str | None:
        """Store ``cycle``; then roll up (once per hour) and apply retention (once per day).
        Returns None, or why the history is unavailable."""
        self.maintenance = []
        try:
            if self.conn is None:
                if (dsn := self.dsn()) is None:
                    return NOT_RUNNING
                self.connected_to = dsn
                self.conn = connect(dsn, autocommit=True, timeout=5)
                migrate(self.conn)
            store.record_cycle(self.conn, cycle)
            hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
            if self.rolled_up != hour:
                hourly, daily = store.rollup(self.conn, now)
                self.rolled_up = hour
                self.maintenance.append(f"rolled up ({hourly} hourly, {daily} daily rows)")
            if self.retained != hour.date():
                dropped = store.apply_retention(self.conn, now)
                self.retained = hour.date()
                if dropped:
                    self.maintenance.append(f"dropped raw samples of {len(dropped)} day(s) older than "
                                            f"{store.KEEP_DAYS} days")
        except (BvhOpsError, psycopg.Error, OSError) as exc:
            self.close()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return scrub(reason, self.connected_to) if self.connected_to else reason
        return None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None


def run_monitor(cycle: Callable[[], CycleResult], history: History, *, interval: float, cycles: int | None,
                stop: threading.Event, report: Callable[[CycleResult, str | None], None],
                wait: Callable[[float], bool] | None = None, monotonic: Callable[[], float] = time.monotonic,
                now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    """Run ``cycle`` every ``interval`` seconds (start to start; an overrunning cycle is followed
    at once, not by a burst) until ``stop`` is set or ``cycles`` ran; returns the cycles run.
    ``wait(seconds) -> stopped`` is the sleep (``stop.wait`` unless a test injects its own)."""
    wait = wait or stop.wait
    done = 0
    next_start = monotonic()
    try:
        while not stop.is_set():
            result = cycle()
            report(result, history.record(result, now()))
            done += 1
            if cycles is not None and done >= cycles:
                break
            next_start += interval
            delay = next_start - monotonic()
            if delay < 0:
                next_start, delay = monotonic(), 0.0
            if wait(delay):
                break
    finally:
        history.close()
    return done
