"""Expectations over small records already in hand (one row per table, object or verify
result), evaluated directly: the same checks Great Expectations ran over one-row-per-item
frames, without its ~4-10 s import and context on a backup's critical path. Each check is
passed or failed with "<n> unexpected of <m>: [first values]"; GX stays where it reads data
(the drill's SQL data source)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from bvh_ops.results import CheckResult, CheckStatus

Row = dict[str, Any]


def _check(name: str, rows: Sequence[Row], bad: Callable[[Row], bool], show: Callable[[Row], Any]) -> CheckResult:
    unexpected = [show(r) for r in rows if bad(r)]
    detail = f"{len(unexpected)} unexpected of {len(rows)}" + (f": {unexpected[:5]}" if unexpected else "")
    return CheckResult(name, CheckStatus.FAILED if unexpected else CheckStatus.PASSED, detail)


def values_in_set(name: str, rows: Sequence[Row], column: str, allowed: Sequence[Any]) -> CheckResult:
    return _check(name, rows, lambda r: r[column] not in allowed, lambda r: r[column])


def pair_equal(name: str, rows: Sequence[Row], a: str, b: str) -> CheckResult:
    return _check(name, rows, lambda r: r[a] != r[b], lambda r: (r[a], r[b]))


def values_match(name: str, rows: Sequence[Row], column: str, regex: str) -> CheckResult:
    pattern = re.compile(regex)
    return _check(name, rows, lambda r: not isinstance(r[column], str) or not pattern.search(r[column]),
                  lambda r: r[column])


def values_at_least(name: str, rows: Sequence[Row], column: str, minimum: int) -> CheckResult:
    return _check(name, rows, lambda r: not isinstance(r[column], int) or r[column] < minimum, lambda r: r[column])


def row_count_at_least(name: str, rows: Sequence[Row], minimum: int) -> CheckResult:
    ok = len(rows) >= minimum
    return CheckResult(name, CheckStatus.PASSED if ok else CheckStatus.FAILED, f"observed {len(rows)}")
