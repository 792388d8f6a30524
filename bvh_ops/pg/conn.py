"""Connections with errors translated at the boundary: unreachable -> DatabaseUnavailable
(retried), a malformed connection string -> ConfigError, everything else -> DatabaseError with
PostgreSQL's own message. No message ever carries the password."""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerr

from bvh_ops.dsn import libpq_reason, location, scrub
from bvh_ops.errors import ConfigError, DatabaseError, DatabaseUnavailable

# A fixed text rendering of values, so fingerprints taken on two servers are comparable.
SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET lc_monetary = 'C'",
)
# libpq's words for "nobody answered" -> what the operator reads.
_UNREACHABLE = (
    ("Connection refused", "connection refused"),
    ("timeout expired", "timed out"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
    ("failed to resolve host", "host name not resolved"),
    ("could not translate host name", "host name not resolved"),
    ("No such file or directory", "no server socket"),
    ("the database system is starting up", "starting up"),
    ("the database system is shutting down", "shutting down"),
    ("the database system is in recovery mode", "in recovery"),
)
# libpq refusing the connection settings themselves ("connection is bad: invalid port number …"):
# retrying cannot help.
_BAD_SETTINGS = ("invalid integer value", "invalid port number", "invalid value", " value: ",
                 "could not match", "invalid connection option")


def connect(dsn: str, *, dbname: str | None = None, autocommit: bool = False, timeout: int = 10) -> psycopg.Connection:
    kwargs: dict[str, object] = {"autocommit": autocommit, "connect_timeout": timeout,
                                 "application_name": "bvh-ops"}
    if dbname is not None:
        kwargs["dbname"] = dbname
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except psycopg.ProgrammingError as exc:  # psycopg's own conninfo parse: the message quotes the DSN
        raise ConfigError(f"invalid connection string ({libpq_reason(exc, dsn)}): fix the DSN, e.g. "
                          "postgresql://user:password@host:5432/dbname") from None
    except psycopg.OperationalError as exc:
        raise connect_error(exc, dsn, dbname=dbname) from None
    for stmt in SESSION_SETTINGS:
        conn.execute(stmt)
    if conn.info.parameter_status("client_encoding") == "SQL_ASCII":
        # A SQL_ASCII database: psycopg hands its text over as bytes (names, kinds ...). Under
        # UTF8 nothing is converted, but the server checks what it sends: text that is not valid
        # UTF-8 (a non-UTF-8 table name, say) fails with one clear error. Table data is read
        # under SQL_ASCII itself (fingerprint.copy_digest_inline, psql), as the dump has it.
        conn.execute("SET client_encoding = 'UTF8'")
    if not autocommit:
        conn.commit()
    return conn


def connect_error(exc: psycopg.OperationalError, dsn: str, *, dbname: str | None = None) -> Exception:
    """The error a failed connection to ``dsn`` becomes: one line naming host and port."""
    text = scrub(str(exc), dsn)
    where = location(dsn, **({"dbname": dbname} if dbname else {}))
    if any(marker in text for marker in _BAD_SETTINGS) and "FATAL" not in text:
        detail = text.strip().splitlines()[0].removeprefix("connection is bad: ")
        return ConfigError(f"invalid connection settings for {where} ({detail}): fix the DSN")
    for marker, reason in _UNREACHABLE:
        if marker in text:
            return DatabaseUnavailable(f"database unreachable at {where} ({reason}): is PostgreSQL running "
                                       "there and accepting connections?")
    if "server does not support SSL" in text:  # sslmode=require against a server without SSL: no retry mends it
        return ConfigError(f"the database at {where} does not support SSL, and the DSN requires it: enable ssl on "
                           "the server or change sslmode")
    if "password authentication failed" in text or "does not exist" in text or "no pg_hba.conf entry" in text:
        message = _server_message(text)
        hint = ""
        if message.startswith("database ") and message.endswith("does not exist"):
            hint = ": create it first (createdb, or CREATE DATABASE) or fix the DSN's database name"
        elif message.startswith("role ") and message.endswith("does not exist"):
            hint = ": fix the DSN's user (or create the role)"
        return DatabaseError(f"cannot connect to the database at {where}: {message}{hint}")
    return DatabaseUnavailable(f"database unreachable at {where}: {_server_message(text)}")


def _server_message(text: str) -> str:
    """The informative part of libpq's message: after 'FATAL:' or '… failed:', one line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()] or ["no message"]
    line = lines[0]
    for marker in ("FATAL:", "failed:"):
        if marker in line:
            line = line.rsplit(marker, 1)[1].strip()
            break
    return " ".join(line.split())


def translate(exc: psycopg.Error, what: str) -> Exception:
    if isinstance(exc, pgerr.InsufficientPrivilege):
        return DatabaseError(f"{what}: permission denied ({exc.diag.message_primary}): grant the backup role SELECT on it")
    if isinstance(exc, (psycopg.OperationalError, pgerr.AdminShutdown, pgerr.CannotConnectNow)):
        return DatabaseUnavailable(f"{what}: connection lost ({exc.__class__.__name__})")
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag is not None else None) or str(exc).strip() or exc.__class__.__name__
    return DatabaseError(f"{what}: {primary}")
