"""A check result and how statuses combine.

Severity, lowest first: ``ok < warning < unknown < critical``. The worst status wins. ``unknown``
(a probe that could not run, or did not finish) is never ``ok``: we cannot see, so it ranks above
a known ``warning`` — a blind spot may hide anything up to an outage — and below a proven
``critical``. (Icinga orders its service states the same way.) Nothing checked at all is
``unknown``, never healthy. For exit codes and the runbook's healthy|warning|critical vocabulary,
``unknown`` counts as ``warning`` (``exit_code``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Status(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    UNKNOWN = "unknown"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}
# health-check's exit codes: 0 healthy, 1 warning (unknown too), 2 critical.
_EXIT = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 1, Status.CRITICAL: 2}


@dataclass(frozen=True)
class Check:
    """One observation judged against its threshold. ``value`` in ``unit`` (None where there is
    no number, e.g. an endpoint that did not answer); ``detail`` is one line for an operator and
    never carries a secret."""

    name: str        # unique within a cycle: "api-health", "database.connections", "disk:/"
    service: str     # database | cache | api | frontend | backups | host | any configured name
    status: Status
    value: float | None = None
    unit: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "service": self.service, "status": str(self.status),
                "value": self.value, "unit": self.unit, "detail": self.detail}


def worst(statuses: Iterable[Status]) -> Status:
    """The worst of ``statuses``; ``unknown`` when there are none (nothing checked is not ok)."""
    found = list(statuses)
    return max(found, key=lambda s: s.rank) if found else Status.UNKNOWN


def overall(checks: Iterable[Check]) -> Status:
    return worst(c.status for c in checks)


def exit_code(status: Status) -> int:
    """0 healthy, 1 warning or unknown, 2 critical."""
    return _EXIT[status]
