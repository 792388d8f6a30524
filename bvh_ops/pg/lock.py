"""At most one run of a procedure per target: a session-level PostgreSQL advisory lock."""

from __future__ import annotations

import psycopg

from bvh_ops.errors import ConcurrencyError
from bvh_ops.pg.conn import connect

# pg_advisory_lock key space: a fixed class id and a per-procedure id (hashtext of its name).
LOCK_CLASS = 0x6276  # "bv"


class TargetLock:
    """Session-level advisory lock on the target: at most one run of ``procedure`` per target.

    Chosen over a Prefect global concurrency limit because it lives in the target itself: it
    holds for CLI runs, Prefect runs and several Prefect servers alike, and PostgreSQL releases
    it by itself when the holder dies (a Prefect slot of a SIGKILLed run waits for slot decay).
    """

    def __init__(self, dsn: str, procedure: str) -> None:
        self.dsn = dsn
        self.procedure = procedure
        self.conn: psycopg.Connection | None = None

    def __enter__(self) -> TargetLock:
        self.conn = connect(self.dsn, autocommit=True)
        if self.conn.info.server_version >= 140000:
            # The lock lives as long as this idle session: a server's idle_session_timeout would
            # end it mid-run, silently letting a second run start.
            self.conn.execute("SET idle_session_timeout = 0")
        got = self.conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                                (LOCK_CLASS, self.procedure)).fetchone()[0]
        if not got:
            holder = self.conn.execute(
                "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = hashtext(%s)::oid",
                (LOCK_CLASS, self.procedure)).fetchone()
            self.conn.close()
            who = f" (backend pid {holder[0]}, since {holder[2]:%Y-%m-%d %H:%M:%S})" if holder else ""
            raise ConcurrencyError(
                f"another {self.procedure} of this database is running{who}: wait for it to finish")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is None:
            return
        try:
            # Released here, not left to the session's end: the server ends a backend after its
            # client has gone, in its own time, and a run started right after this one (the next
            # backup in a script, a retry) met the lock still held and refused to start.
            self.conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, self.procedure))
        except psycopg.Error:
            pass  # the session is gone (the server restarted, a timeout): so is its lock
        finally:
            self.conn.close()
