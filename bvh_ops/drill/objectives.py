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


def physical_stage_split(parts: dict[str, float], elapsed: float) -> list[dict[str, float | str]]:
    """A physical restore's own timings as the drill's stages: fetch + combine (restore),
    pg_verifybackup, and the rest of the call (recovery through WAL, start, promotion)."""
    restore = parts.get("fetch", 0) + parts.get("combine", 0)
    verify = parts.get("verify", 0)
    return [{"name": "physical_restore", "seconds": round(restore, 3)},
            {"name": "physical_verifybackup", "seconds": verify},
            {"name": "physical_recover_start", "seconds": round(elapsed - restore - verify, 3)}]


def physical_rpo(target_kind: str | None, target_time: datetime | None, newest_restored: datetime | None,
                 source_newest: datetime | None, drill_started: datetime) -> float | None:
    """RPO of a physical drill. LSN and name targets are reached exactly or recovery fails: 0.
    A time target: target − newest restored commit. The end of the archive: the source's newest
    commit before the drill − the newest restored one (what the archive had not received yet)."""
    if target_kind in ("lsn", "name"):
        return 0.0
    if newest_restored is None:
        return None
    return rpo_seconds(target_time or source_newest or drill_started, newest_restored)


def ready_time(mode: str, logical_ready: datetime | None, physical_ready: datetime | None) -> datetime | None:
    """When the drill's restored copies were all up and checked (both modes: the later one)."""
    if mode == "logical":
        return logical_ready
    if mode == "physical":
        return physical_ready
    return max(logical_ready, physical_ready) if logical_ready and physical_ready else None


def drill_rto_rpo(started: datetime, ready_at: datetime | None, all_passed: bool,
                  rpos: list[float]) -> tuple[float | None, float | None]:
    """RTO counts only when every check passed (a restore that is wrong has not recovered);
    RPO is the worst of the modes'."""
    rto = rto_seconds(started, ready_at) if ready_at and all_passed else None
    return rto, (max(rpos) if rpos else None)
