"""Sample history as the dashboard reads it: a protocol, an in-memory implementation over the
dashboard's own recent cycles (a ring buffer), and OpsHistory over the samples `bvh-ops monitor`
keeps in the ops database.

Series are by check name ("host.cpu", "host.memory", an endpoint's name), the names the store
keeps. Uptime of a service over a window is the percentage of its samples that were not
``critical``; samples that are ``unknown`` (could not check) count neither way; no sample at all
is ``None``, never 100.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.results import Status, worst


class DrillPoint(NamedTuple):
    """One drill as the dashboard draws it (a row of ``ops.drills``)."""
    started_at: datetime
    rto_seconds: float | None
    rpo_seconds: float | None
    mode: str = "logical"
    passed: bool = True
    rto_objective_seconds: float | None = None
    rpo_objective_seconds: float | None = None


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


class OpsHistory:
    """History over the samples `bvh-ops monitor` keeps in the ops database (same semantics as
    MemoryHistory: per cycle the service's worst status; critical is down, unknown counts neither
    way). ``dsn`` is asked on every read: the ops database may come and go; when it is not
    running a read raises and the dashboard says "history unavailable" where the figure goes."""

    def __init__(self, dsn: Callable[[], str | None]) -> None:
        self._dsn = dsn

    def _connect(self):
        from bvh_ops.errors import DatabaseUnavailable
        from bvh_ops.pg.conn import connect

        dsn = self._dsn()
        if not dsn:
            raise DatabaseUnavailable("the ops database is not running (bvh-ops opsdb start)")
        return connect(dsn, autocommit=True)

    def series(self, name: str, since: datetime, until: datetime) -> list[tuple[datetime, float]]:
        from bvh_ops.monitoring.store import series

        with self._connect() as conn:
            return [(p.at, p.value) for p in series(conn, name, since, until) if p.value is not None]

    def uptime(self, service: str, since: datetime, until: datetime) -> float | None:
        with self._connect() as conn:
            up, down = conn.execute(
                "SELECT count(*) FILTER (WHERE worst <= 1), count(*) FILTER (WHERE worst = 3) FROM ("
                " SELECT at, max(status) AS worst FROM ops.samples WHERE service = %s AND at >= %s AND at <= %s"
                " GROUP BY at) AS per_cycle", (service, since, until)).fetchone()
        return None if up + down == 0 else round(100.0 * up / (up + down), 3)

    def drills(self, limit: int = 20) -> list[DrillPoint]:
        """The last ``limit`` drills in ``ops.drills`` (logical, physical and failover), oldest
        first; none where the table does not exist yet (no drill has run)."""
        import psycopg

        with self._connect() as conn:
            try:
                rows = conn.execute(
                    "SELECT started_at, rto_seconds, rpo_seconds, mode, passed, rto_objective_seconds, "
                    "rpo_objective_seconds FROM ops.drills ORDER BY started_at DESC LIMIT %s", (limit,)).fetchall()
            except psycopg.errors.UndefinedTable:
                return []
        return [DrillPoint(*row) for row in reversed(rows)]
