"""One line (or csvlog record) of a source becomes a Record, or a ParseError saying why not.
Pure: no I/O. Category is left empty where the line carries none (classify.py decides).

Formats:
- ``json``: the platform's lines (bvh_ops/demo/platform/logs.py): timestamp, level, category,
  event, service, then the event's own fields.
- ``postgres-jsonlog``: PostgreSQL's ``log_destination = jsonlog`` (15+), one JSON object a line:
  https://www.postgresql.org/docs/current/runtime-config-logging.html#RUNTIME-CONFIG-LOGGING-JSONLOG
- ``postgres-csvlog``: ``log_destination = csvlog``, the documented column order (CSV_COLUMNS).
PostgreSQL's severities map onto our levels; its messages become events (pg.auth_failed, ...)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from bvh_ops.logs.record import CATEGORIES, Record

FORMATS = ("json", "postgres-jsonlog", "postgres-csvlog")

# PostgreSQL 15+ csvlog columns, in order (docs: "Using CSV-Format Log Output"); 13 added
# backend_type, 14 leader_pid and query_id. Older servers write fewer: missing ones are empty.
CSV_COLUMNS = ("log_time", "user_name", "database_name", "process_id", "connection_from", "session_id",
               "session_line_num", "command_tag", "session_start_time", "virtual_transaction_id", "transaction_id",
               "error_severity", "sql_state_code", "message", "detail", "hint", "internal_query",
               "internal_query_pos", "context", "query", "query_pos", "location", "application_name",
               "backend_type", "leader_pid", "query_id")
_CSV_MIN_COLUMNS = 23   # PostgreSQL 9.0-12

# PostgreSQL's error_severity -> our level.
PG_LEVELS = {"DEBUG5": "debug", "DEBUG4": "debug", "DEBUG3": "debug", "DEBUG2": "debug", "DEBUG1": "debug",
             "DEBUG": "debug", "LOG": "info", "INFO": "info", "NOTICE": "info", "STATEMENT": "info",
             "DETAIL": "info", "HINT": "info", "CONTEXT": "info", "WARNING": "warning", "ERROR": "error",
             "FATAL": "error", "PANIC": "error"}
# Other spellings of the platform's levels.
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "critical": "error", "fatal": "error", "trace": "debug",
                  "notice": "info"}
# SQLSTATE class 28: invalid authorization specification (28000, 28P01 invalid_password).
_AUTH_STATES = ("28000", "28P01")
_DURATION = re.compile(r"^duration: ([0-9.]+) ms(?:\s+(statement|execute [^:]*|parse [^:]*|bind [^:]*): (.*))?",
                       re.S)
# PostgreSQL's jsonlog/csvlog time: "2026-11-28 10:15:02.123 UTC" (log_timezone's abbreviation).
_PG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) ?(.*)$")
_OFFSET = re.compile(r"^([+-])(\d{1,2})(?::?(\d{2}))?$")


class ParseError(ValueError):
    """The line is not a record of its format; the message says what is wrong (for the quarantine)."""


def parse(fmt: str, text: str, *, source: str) -> Record:
    """The Record of one line/record of ``fmt`` (category "" when the line has none)."""
    if fmt == "json":
        return parse_platform(text, source=source)
    if fmt == "postgres-jsonlog":
        return parse_pg_jsonlog(text, source=source)
    if fmt == "postgres-csvlog":
        return parse_pg_csvlog(text, source=source)
    raise ParseError(f"unknown format {fmt!r}")


# -- the platform's JSON lines ----------------------------------------------------------------

def parse_platform(text: str, *, source: str) -> Record:
    obj = _json_object(text)
    fields = dict(obj)
    at = parse_iso(fields.pop("timestamp", None))
    level = platform_level(fields.pop("level", "info"))
    category = fields.pop("category", "")
    if category is None:
        category = ""
    if not isinstance(category, str) or (category and category not in CATEGORIES):
        raise ParseError(f"unknown category {category!r} (expected one of {', '.join(CATEGORIES)})")
    event = fields.pop("event", "")
    if not isinstance(event, str):
        raise ParseError("event is not a string")
    message = fields.pop("message", fields.pop("msg", ""))
    return Record(at=at, category=category, source=source, level=level, event=event,
                  message=message if isinstance(message, str) else json.dumps(message), fields=fields)


def platform_level(value: Any) -> str:
    if not isinstance(value, str):
        raise ParseError(f"level {value!r} is not a string")
    low = value.strip().lower()
    low = _LEVEL_ALIASES.get(low, low)
    if low not in ("debug", "info", "warning", "error"):
        raise ParseError(f"unknown level {value!r}")
    return low


def parse_iso(value: Any) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; none means UTC) in UTC."""
    if not isinstance(value, str) or not value:
        raise ParseError("timestamp is missing")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ParseError(f"timestamp {value[:40]!r} is not ISO 8601") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ParseError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ParseError(f"not a JSON object but {type(obj).__name__}")
    return obj


# -- PostgreSQL ------------------------------------------------------------------------------

def parse_pg_time(value: Any) -> datetime:
    """PostgreSQL's log time: ``2026-11-28 10:15:02.123 UTC`` (or GMT, or a numeric offset).
    Zone abbreviations other than UTC/GMT are ambiguous (IST, CST): set ``log_timezone = 'UTC'``."""
    if not isinstance(value, str) or not (m := _PG_TIME.match(value.strip())):
        raise ParseError(f"log time {str(value)[:40]!r} is not 'YYYY-MM-DD HH:MM:SS[.fff] ZONE'")
    at = datetime.fromisoformat(m[1])
    zone = m[2].strip()
    if zone in ("", "UTC", "GMT", "Z", "UCT", "Etc/UTC"):
        return at.replace(tzinfo=UTC)
    if om := _OFFSET.match(zone):
        delta = timedelta(hours=int(om[2]), minutes=int(om[3] or 0))
        return at.replace(tzinfo=timezone(-delta if om[1] == "-" else delta)).astimezone(UTC)
    raise ParseError(f"log time zone {zone!r} is ambiguous: set log_timezone = 'UTC' on the server")


def pg_event(severity: str, message: str, state: str) -> tuple[str, dict[str, Any]]:
    """The event a PostgreSQL message is (and fields drawn from it)."""
    if state in _AUTH_STATES or "authentication failed" in message or message.startswith("no pg_hba.conf entry"):
        return "pg.auth_failed", {}
    if message.startswith("connection authorized"):
        return "pg.connection_authorized", {}
    if message.startswith("connection received"):
        return "pg.connection_received", {}
    if message.startswith("disconnection:"):
        return "pg.disconnection", {}
    if m := _DURATION.match(message):
        extra: dict[str, Any] = {"duration_ms": float(m[1])}
        if m[3]:
            extra["statement"] = m[3]
        return "pg.slow_statement", extra
    if message.startswith(("checkpoint starting", "checkpoint complete")):
        return "pg.checkpoint", {}
    if severity in ("ERROR", "FATAL", "PANIC"):
        return "pg.error", {}
    return "pg.log", {}


def _pg_record(*, source: str, at: datetime, severity: str, message: str, state: str,
               fields: dict[str, Any]) -> Record:
    sev = severity.upper()
    if sev not in PG_LEVELS:
        raise ParseError(f"unknown error_severity {severity!r}")
    event, extra = pg_event(sev, message, state)
    fields = {k: v for k, v in fields.items() if v not in (None, "")}
    fields["severity"] = sev
    if state:
        fields["sql_state"] = state
    fields.update(extra)
    return Record(at=at, category="", source=source, level=PG_LEVELS[sev], event=event, message=message,
                  fields=fields)


# jsonlog keys renamed to the names the platform and the analysis use (ip, like the platform's).
_JSONLOG_RENAME = {"remote_host": "ip", "user": "db_user", "dbname": "database", "application_name": "application"}


def parse_pg_jsonlog(text: str, *, source: str) -> Record:
    obj = _json_object(text)
    at = parse_pg_time(obj.pop("timestamp", None))
    severity = obj.pop("error_severity", None)
    if not isinstance(severity, str):
        raise ParseError("error_severity is missing")
    message = obj.pop("message", "")
    state = obj.pop("state_code", "") or ""
    fields = {_JSONLOG_RENAME.get(k, k): v for k, v in obj.items()}
    return _pg_record(source=source, at=at, severity=severity, message=str(message), state=str(state),
                      fields=fields)


def parse_pg_csvlog(text: str, *, source: str) -> Record:
    """One csvlog record (possibly several physical lines: a quoted field may hold newlines)."""
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as exc:
        raise ParseError(f"not CSV: {exc}") from None
    if len(rows) != 1:
        raise ParseError(f"expected one CSV record, found {len(rows)}")
    row = rows[0]
    if not _CSV_MIN_COLUMNS <= len(row) <= len(CSV_COLUMNS):
        raise ParseError(f"{len(row)} columns, expected {_CSV_MIN_COLUMNS}-{len(CSV_COLUMNS)} (csvlog)")
    cols = dict(zip(CSV_COLUMNS, row, strict=False))
    at = parse_pg_time(cols.pop("log_time"))
    severity = cols.pop("error_severity")
    message = cols.pop("message")
    state = cols.pop("sql_state_code")
    host, _, port = cols.pop("connection_from").rpartition(":")
    fields: dict[str, Any] = {"db_user": cols.pop("user_name"), "database": cols.pop("database_name"),
                              "application": cols.pop("application_name", "")}
    if host:
        fields["ip"], fields["remote_port"] = host, port
    elif port:
        fields["ip"] = port   # "[local]" or a host without a port
    for key, value in cols.items():
        fields[key] = value
    for key in ("process_id", "session_line_num", "leader_pid", "internal_query_pos", "query_pos"):
        if isinstance(fields.get(key), str) and fields[key].isdigit():
            fields[key] = int(fields[key])
    return _pg_record(source=source, at=at, severity=severity, message=message, state=state, fields=fields)


def csv_record_complete(buffer: str) -> bool:
    """Does ``buffer`` (one or more physical lines) end a csvlog record? An odd number of quotes
    means a quoted field is still open (a statement with newlines): read the next line too."""
    return buffer.count('"') % 2 == 0
