"""Sample history as the dashboard reads it: a protocol, and an in-memory implementation over the
dashboard's own recent cycles (a ring buffer). The ops-database store plugs in behind the same
protocol later (an adapter holding its connection).

Series are by check name ("host.cpu", "host.memory", an endpoint's name), the names the store
keeps. Uptime of a service over a window is the percentage of its samples that were not
``critical``; samples that are ``unknown`` (could not check) count neither way; no sample at all
is ``None``, never 100.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.results import Status, worst


class History(Protocol):
    def series(self, name: str, since: datetime, until: datetime) -> Sequence[tuple[datetime, float]]:
        """(time, value) of check ``name`` in [since, until], oldest first."""
        ...

    def uptime(self, service: str, since: datetime, until: datetime) -> float | None:
        """Percentage of ``service``'s samples in [since, until] that were up; None without samples."""
        ...


class MemoryHistory:
    """History over recent cycles held in memory (bounded by ``maxlen`` cycles)."""

    def __init__(self, maxlen: int) -> None:
        self.cycles: deque[CycleResult] = deque(maxlen=max(2, maxlen))

    def add(self, cycle: CycleResult) -> None:
        self.cycles.append(cycle)

    def _window(self, since: datetime, until: datetime) -> Iterable[CycleResult]:
        return (c for c in list(self.cycles) if since <= c.checked_at <= until)

    def series(self, name: str, since: datetime, until: datetime) -> list[tuple[datetime, float]]:
        return [(c.checked_at, check.value) for c in self._window(since, until)
                for check in c.checks if check.name == name and check.value is not None]

    def uptime(self, service: str, since: datetime, until: datetime) -> float | None:
        up = down = 0
        for c in self._window(since, until):
            mine = [check.status for check in c.checks if check.service == service]
            if not mine:
                continue
            status = worst(mine)
            if status is Status.CRITICAL:
                down += 1
            elif status is not Status.UNKNOWN:
                up += 1
        return None if up + down == 0 else round(100.0 * up / (up + down), 3)
