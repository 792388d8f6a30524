"""Connections with errors translated at the boundary: unreachable -> DatabaseUnavailable
(retried), everything else -> DatabaseError with PostgreSQL's own message."""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerr

from bvh_ops.errors import DatabaseError, DatabaseUnavailable

# A fixed text rendering of values, so fingerprints taken on two servers are comparable.
SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET lc_monetary = 'C'",
)


def connect(dsn: str, *, dbname: str | None = None, autocommit: bool = False, timeout: int = 10) -> psycopg.Connection:
    kwargs: dict[str, object] = {"autocommit": autocommit, "connect_timeout": timeout,
                                 "application_name": "bvh-ops"}
    if dbname is not None:
        kwargs["dbname"] = dbname
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else exc.__class__.__name__
        text = str(exc)
        if "password authentication failed" in text or "does not exist" in text or "no pg_hba.conf entry" in text:
            raise DatabaseError(f"cannot connect to the database: {_redact(msg)}") from None
        raise DatabaseUnavailable(f"database unreachable: {_redact(msg)}") from None
    for stmt in SESSION_SETTINGS:
        conn.execute(stmt)
    if not autocommit:
        conn.commit()
    return conn


def _redact(msg: str) -> str:
    # libpq never prints the password, but a DSN may leak into a message through user input.
    import re

    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", msg)


def translate(exc: psycopg.Error, what: str) -> Exception:
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return DatabaseError(f"{what}: permission denied ({exc.diag.message_primary}): grant the backup role SELECT on it")
    if isinstance(exc, (psycopg.OperationalError, pgerr.AdminShutdown, pgerr.CannotConnectNow)):
        return DatabaseUnavailable(f"{what}: connection lost ({exc.__class__.__name__})")
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or str(exc).strip() or exc.__class__.__name__
    return DatabaseError(f"{what}: {primary}")
