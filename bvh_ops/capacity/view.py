"""Capacity as the dashboard shows it: the resources' status table and their charts (PNG), from
the ops database's capacity history, computed at most every ``ttl`` seconds (forecasting every
series costs seconds; the history changes once a day)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bvh_ops.capacity.report import charts, report_parts
from bvh_ops.config import Settings
from bvh_ops.errors import DatabaseError
from bvh_ops.pg.conn import connect


class OpsCapacityView:
    def __init__(self, settings: Settings, dsn: Callable[[], str | None], *, ttl: float = 600.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.settings, self.dsn, self.ttl, self.clock = settings, dsn, ttl, clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def board(self) -> dict[str, Any]:
        """{generated_at, resources: [...the report's...], charts: {name: data URI}}; raises when
        the ops database is not running or holds no capacity history yet."""
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
            if (dsn := self.dsn()) is None:
                raise DatabaseError("the ops database is not running (bvh-ops opsdb start)")
            with connect(dsn, autocommit=True, timeout=5) as conn:
                if conn.execute("SELECT to_regclass('ops.capacity_samples')").fetchone()[0] is None:
                    raise DatabaseError("no capacity history yet (bvh-ops capacity collect)")
                doc, forecasts, history = report_parts(self.settings, conn, self.clock())
            pngs = charts(doc, forecasts, history)
            out = {"generated_at": doc["generated_at"], "resources": doc["resources"],
                   "charts": {name: "data:image/png;base64," + base64.b64encode(png).decode()
                              for name, png in pngs.items()}}
            self._cached = (time.monotonic(), out)
            return out
