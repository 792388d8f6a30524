"""RTO/RPO arithmetic: pure functions over timestamps, ``now`` never read here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bvh_ops.results import CheckResult, CheckStatus


@dataclass(frozen=True)
class Objectives:
    rto_seconds: float = 900.0  # the runbook: database RTO 15 minutes
    rpo_seconds: float = 300.0  # the runbook: at most 5 minutes of data loss


def rto_seconds(drill_started: datetime, ready_and_checked: datetime) -> float:
    """Wall time from drill start until the restored database accepted connections and passed."""
    return max(0.0, (ready_and_checked - drill_started).total_seconds())


def rpo_seconds(target: datetime, newest_commit: datetime | None) -> float | None:
    """Data lost: the recovery target (or simulated disaster) minus the newest restored commit."""
    if newest_commit is None:
        return None
    return max(0.0, (target - newest_commit).total_seconds())


def objective_checks(rto: float | None, rpo: float | None, objectives: Objectives) -> list[CheckResult]:
    out = []
    for name, value, limit in (("rto_objective", rto, objectives.rto_seconds),
                               ("rpo_objective", rpo, objectives.rpo_seconds)):
        if value is None:
            out.append(CheckResult(name, CheckStatus.NOT_VERIFIED, "could not be measured"))
        elif value <= limit:
            out.append(CheckResult(name, CheckStatus.PASSED, f"{value:.1f} s ≤ {limit:.0f} s"))
        else:
            out.append(CheckResult(name, CheckStatus.FAILED, f"{value:.1f} s > objective {limit:.0f} s"))
    return out


def trend_line(previous: list[tuple[float | None, float | None]]) -> str:
    """'RTO 41.0 → 39.2 → 40.1 s' style summary of earlier drills (oldest first)."""
    if not previous:
        return "no earlier drills"
    rtos = " → ".join(f"{r:.1f}" if r is not None else "–" for r, _ in previous)
    rpos = " → ".join(f"{p:.1f}" if p is not None else "–" for _, p in previous)
    return f"RTO {rtos} s; RPO {rpos} s"
