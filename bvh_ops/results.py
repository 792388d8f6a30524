"""Check results shared by every suite."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CheckStatus(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_VERIFIED = "not_verified"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: CheckStatus
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status is CheckStatus.PASSED

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": str(self.status), "detail": self.detail}


def all_passed(results: list[CheckResult]) -> bool:
    """True only when there is at least one result and every one passed."""
    return bool(results) and all(r.passed for r in results)


