"""The log viewer's arguments (pure): times, matches, level and category checked and turned into
a store.Query, each bad value one clear ConfigError naming the option."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bvh_ops.errors import ConfigError
from bvh_ops.logs.record import CATEGORIES, LEVELS, Record
from bvh_ops.logs.store import Query

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def parse_time(option: str, text: str, now: datetime) -> datetime:
    """ISO 8601 (a date, or a time; no offset means UTC) or a duration back from ``now``: 30m, 2h, 7d, 1h30m."""
    text = text.strip()
    if re.fullmatch(r"(?:\d+[smhdw])+", text.lower()):
        seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", text.lower()))
        try:
            return now.astimezone(UTC) - timedelta(seconds=seconds)
        except OverflowError:
            raise ConfigError(f"{option} '{text}': reaches back before the year 1; give a shorter duration or an "
                              "ISO time") from None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} '{text}': use an ISO time (2026-11-28, 2026-11-28T10:00:00Z) or a duration "
                          "back such as 30m, 2h or 7d") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_matches(items: Sequence[str]) -> dict[str, str]:
    """``FIELD=VALUE`` pairs (a field of the record, or event/source/message)."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _FIELD.match(key):
            raise ConfigError(f"--match '{item}': use FIELD=VALUE, e.g. --match event=auth.login_failed "
                              "or --match ip=203.0.113.9")
        found[key] = value
    return found


def build_query(*, category: str | None, since: str | None, until: str | None, level: str | None,
                match: Sequence[str], grep: str | None, limit: int | None, now: datetime) -> Query:
    if category is not None and category not in CATEGORIES:
        raise ConfigError(f"--category '{category}': choose one of {', '.join(CATEGORIES)}")
    if level is not None:
        level = {"warn": "warning", "err": "error"}.get(level.lower(), level.lower())
        if level not in LEVELS:
            raise ConfigError(f"--level '{level}': choose one of {', '.join(LEVELS)} (that level and above)")
    if limit is not None and limit < 0:
        raise ConfigError(f"--limit {limit}: must be 0 (no limit) or more")
    start = parse_time("--since", since, now) if since else None
    end = parse_time("--until", until, now) if until else None
    if start and end and end <= start:
        raise ConfigError(f"--until {end.isoformat()} is not after --since {start.isoformat()}")
    if grep is not None and not grep.strip():
        raise ConfigError("--grep is empty: give the text to look for")
    return Query(category=category, since=start, until=end, level=level, match=parse_matches(match) or None,
                 grep=grep, limit=limit or None)


def matches(query: Query, rec: dict) -> bool:
    """``query`` applied in Python to one archived record (a dict as the archive stores it), with
    the hot store's meaning: level a minimum, match an equality on a field or column, grep a
    case-insensitive substring of the message or any field value."""
    at = datetime.fromisoformat(rec["at"]) if isinstance(rec["at"], str) else rec["at"]
    if query.category and rec.get("category") != query.category:
        return False
    if (query.since and at < query.since) or (query.until and at >= query.until):
        return False
    if query.level and LEVELS.index(rec.get("level", "info")) < LEVELS.index(query.level):
        return False
    fields = rec.get("fields") or {}
    for key, value in (query.match or {}).items():
        got = rec.get(key) if key in ("event", "source", "message", "level", "category") else fields.get(key)
        if got is None or str(got) != value:
            return False
    if query.grep:
        needle = query.grep.lower()
        haystack = [str(rec.get("message", ""))] + [str(v) for v in fields.values()]
        if not any(needle in h.lower() for h in haystack):
            return False
    return True


def text_line(rec: Record) -> str:
    """A record as one line of ``bvh-ops logs search`` (time UTC, category, level, event, message,
    then each field as key=value, long values cut at 80 characters)."""
    extra = " ".join(f"{k}={short(v)}" for k, v in rec.fields.items())
    return (f"{rec.at:%Y-%m-%d %H:%M:%S.%f}"[:-3] + f"Z {rec.category:<11} {rec.level:<7} "
            f"{rec.event or '-'} {rec.message} {extra}").rstrip()


def record_of(doc: dict) -> Record:
    """An archived record (a JSON line of a log archive) as a Record."""
    return Record(datetime.fromisoformat(doc["at"]), doc["category"], doc["source"], doc["level"], doc["event"],
                  doc["message"], doc["fields"] or {}, doc.get("file_id", ""), doc.get("file_offset", 0))


def short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
