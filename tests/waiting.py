"""Wait on conditions, never on the clock: on a busy machine everything is slower, and a test
must then take longer, not fail. The bounds are generous; they only end a test that hangs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

# Bounds for conditions that take seconds on an idle machine (minutes on a loaded one).
PATIENCE = 300.0


def wait_until(condition: Callable[[], T], what: str, *, timeout: float = PATIENCE, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def more_writes(workload, n: int = 40, *, timeout: float = PATIENCE) -> None:
    """Wait until a running ``bvh_ops.pg.sample.Workload`` has committed ``n`` more transactions
    (rows that separate two cuts), however long that takes on this machine."""
    start = workload.stats.transactions
    wait_until(lambda: workload.stats.transactions >= start + n, f"{n} more workload transactions",
               timeout=timeout, interval=0.02)
