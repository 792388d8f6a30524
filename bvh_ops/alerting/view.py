"""Alerting as the dashboard and ``bvh-ops status`` see it: the active alerts and the
acknowledge action, read from the ops database with a short connection per call."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import UTC, datetime

from bvh_ops.alerting.store import acknowledge, list_alerts
from bvh_ops.errors import DatabaseError
from bvh_ops.pg.conn import connect


class OpsAlertsView:
    def __init__(self, dsn: Callable[[], str | None], *, who: str | None = None) -> None:
        self.dsn = dsn
        self.who = who or f"dashboard ({getpass.getuser()})"

    def _connect(self):
        if (dsn := self.dsn()) is None:
            raise DatabaseError("the ops database is not running (bvh-ops opsdb start)")
        return connect(dsn, autocommit=True, timeout=5)

    def active(self) -> list[dict]:
        with self._connect() as conn:
            if conn.execute("SELECT to_regclass('ops.alert_states')").fetchone()[0] is None:
                return []   # never migrated to alerting: nothing has fired
            return list_alerts(conn)

    def acknowledge(self, fingerprint: str) -> bool:
        with self._connect() as conn:
            return acknowledge(conn, fingerprint, self.who, datetime.now(UTC)) is not None
