"""What an hour of probe cycles amounts to (pure): per service the worst status, the share of
cycles it was up (critical is down; unknown counts neither way) and the longest run of
consecutive critical cycles — what the monitoring flow reports and fails on."""

from __future__ import annotations

from dataclasses import dataclass, field

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.results import Status, worst

# A service critical this many cycles in a row (90 s at the default 30 s interval) fails the
# monitoring run, so the "monitoring run failed" automation notifies until alerting delivers;
# a single bad cycle (a blip) does not.
CRITICAL_STREAK = 3


@dataclass
class ServiceHour:
    worst: Status = Status.OK
    up: int = 0
    down: int = 0
    streak: int = 0  # current consecutive critical cycles
    longest_streak: int = 0

    @property
    def up_percent(self) -> float | None:
        return None if self.up + self.down == 0 else round(100.0 * self.up / (self.up + self.down), 2)


@dataclass
class HourSummary:
    cycles: int = 0
    services: dict[str, ServiceHour] = field(default_factory=dict)
    history_unavailable: int = 0  # cycles whose samples could not be stored
    last_history_problem: str | None = None

    def add(self, cycle: CycleResult, history_problem: str | None) -> None:
        self.cycles += 1
        if history_problem is not None:
            self.history_unavailable += 1
            self.last_history_problem = history_problem
        by_service: dict[str, list[Status]] = {}
        for check in cycle.checks:
            by_service.setdefault(check.service, []).append(check.status)
        for service, statuses in by_service.items():
            s = self.services.setdefault(service, ServiceHour())
            status = worst(statuses)
            s.worst = worst([s.worst, status])
            if status is Status.CRITICAL:
                s.down += 1
                s.streak += 1
                s.longest_streak = max(s.longest_streak, s.streak)
            else:
                s.streak = 0
                if status is not Status.UNKNOWN:
                    s.up += 1

    def outages(self, streak: int = CRITICAL_STREAK) -> list[str]:
        """Services critical for at least ``streak`` consecutive cycles."""
        return sorted(name for name, s in self.services.items() if s.longest_streak >= streak)

    def to_json(self) -> dict[str, object]:
        return {"cycles": self.cycles, "history_unavailable_cycles": self.history_unavailable,
                "last_history_problem": self.last_history_problem,
                "services": {name: {"worst": str(s.worst), "up_percent": s.up_percent,
                                    "longest_critical_streak": s.longest_streak}
                             for name, s in sorted(self.services.items())}}
