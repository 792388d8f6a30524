"""What a detector reports (:class:`Detection`) and the bounded bookkeeping they share."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bvh_ops.logs.record import Record

SEVERITIES = ("critical", "warning", "info")


@dataclass
class Detection:
    detector: str                 # "brute_force", "structuring", ...
    category: str                 # security | performance | fraud
    severity: str                 # critical | warning | info (routed to alerting as such)
    subject: str                  # "ip:203.0.113.7", "account:45", "endpoint:GET /api/tickets", "admin:mallory"
    count: int                    # matching records (or rows) behind the finding
    first_seen: datetime
    last_seen: datetime
    evidence: list[dict[str, Any]] = field(default_factory=list)  # a few matching records, bounded
    detail: str = ""              # one sentence: what crossed which threshold

    def as_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "category": self.category, "severity": self.severity,
                "subject": self.subject, "count": self.count, "first_seen": self.first_seen.isoformat(),
                "last_seen": self.last_seen.isoformat(), "evidence": self.evidence, "detail": self.detail}


def evidence_of(r: Record) -> dict[str, Any]:
    """A record as evidence: time, event, source and its fields."""
    return {"at": r.at.isoformat(), "event": r.event, "source": r.source, **r.fields}


class Tally:
    """Per subject: count, first and last time, and the first ``keep`` evidence items."""

    __slots__ = ("count", "first", "last", "evidence", "keep")

    def __init__(self, keep: int) -> None:
        self.count = 0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.evidence: list[dict[str, Any]] = []
        self.keep = keep

    def add(self, at: datetime, item: dict[str, Any] | None = None) -> None:
        self.count += 1
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last
        if item is not None and len(self.evidence) < self.keep:
            self.evidence.append(item)


class Recent:
    """The last ``keep`` items (evidence of an ongoing pattern)."""

    def __init__(self, keep: int) -> None:
        self.items: deque[dict[str, Any]] = deque(maxlen=keep)

    def add(self, item: dict[str, Any]) -> None:
        self.items.append(item)


# Severity per detector, routed to alerting as is: critical pages at once (an attack in progress
# or money moved without a trail), warning goes into the hourly batch (needs a look today), info
# into the daily digest.
SEVERITY = {
    "brute_force": "critical",
    "credential_stuffing": "critical",
    "admin_balance_without_transaction": "critical",
    "known_bad_ip": "warning",
    "admin_off_hours": "warning",
    "access_violations": "warning",
    "new_country": "warning",
    "structuring": "warning",
    "deposit_withdrawal_no_play": "warning",
    "shared_ip": "warning",
    "purchase_velocity": "warning",
    "slow_endpoint": "warning",
    "degradation": "warning",
}


def detection(detector: str, category: str, subject: str, tally: Tally, detail: str) -> Detection:
    assert tally.first is not None and tally.last is not None
    return Detection(detector, category, SEVERITY[detector], subject, tally.count, tally.first, tally.last,
                     list(tally.evidence), detail)


class Detector:
    """The shape every detector has: ``feed`` one record, ``finish`` with the detections; when
    it could not judge (its input lacks a field), ``skipped`` says why."""

    name = ""
    category = ""
    skipped: str | None = None

    def feed(self, r: Record) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def finish(self, now: datetime) -> list[Detection]:  # pragma: no cover - interface
        raise NotImplementedError


def run(detector: Detector, records, now: datetime) -> list[Detection]:
    """A detector as a pure function over an iterable of records."""
    for r in records:
        detector.feed(r)
    return detector.finish(now)
