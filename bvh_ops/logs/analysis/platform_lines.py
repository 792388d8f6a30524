"""The sample platform's JSON log lines as Records — a minimal stand-in until the collector's
parser (#13 item 1) replaces it: ``timestamp`` becomes ``at``, category, level and event are
taken as they are, everything else of the line goes into ``fields``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from bvh_ops.logs.record import Record

_OWN = ("timestamp", "category", "level", "event", "message", "service")


def records_from_platform_lines(lines: Iterable[dict], source: str = "platform") -> Iterator[Record]:
    for line in lines:
        at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
        yield Record(at=at, category=line.get("category", "application"), source=source,
                     level=line.get("level", "info"), event=line.get("event", ""),
                     message=str(line.get("message", "")),
                     fields={k: v for k, v in line.items() if k not in _OWN})
