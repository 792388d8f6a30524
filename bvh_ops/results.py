"""Check results shared by every suite, and the seconds of a procedure's steps."""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
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



class StepTimer:
    """Seconds per named step of a procedure, for its report: ``with steps("verify"): ...``
    (a step entered twice adds up). ``seconds``: {step: seconds, rounded to the millisecond}."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - t0)

    def add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    @property
    def seconds(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self._seconds.items()}
