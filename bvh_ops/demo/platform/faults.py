"""Faults the platform can be told to show at runtime (``POST /admin/faults``): slow responses,
5xx errors, the database unreachable, memory growth. ``{}`` clears them all."""

from __future__ import annotations

import mmap
import threading
from dataclasses import asdict, dataclass

# Memory growth stops here, whatever the rate: the fault must not take the machine down.
MAX_BALLAST_MB = 1024


@dataclass(frozen=True)
class FaultSpec:
    slow_ms: int = 0  # added to every /api/ response (monitoring endpoints too: probes see it)
    error_rate: float = 0.0  # share (0..1) of business requests answered 500
    db_down: bool = False  # act as if the database were unreachable
    memory_growth_mb_per_s: float = 0.0  # ballast allocated per second, up to MAX_BALLAST_MB
    slow_path: str = ""  # when set, slow_ms applies to this path only (one slow endpoint)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_faults(body: object) -> FaultSpec:
    """A FaultSpec from the admin endpoint's JSON; ValueError naming the field otherwise."""
    if not isinstance(body, dict):
        raise ValueError("faults: expected a JSON object, e.g. {\"slow_ms\": 2000}")
    known = set(FaultSpec.__dataclass_fields__)
    unknown = sorted(set(body) - known)
    if unknown:
        raise ValueError(f"faults: unknown field(s) {unknown}; known: {sorted(known)}")
    slow = body.get("slow_ms", 0)
    rate = body.get("error_rate", 0.0)
    down = body.get("db_down", False)
    growth = body.get("memory_growth_mb_per_s", 0.0)
    if isinstance(slow, bool) or not isinstance(slow, int) or not 0 <= slow <= 600_000:
        raise ValueError("faults: slow_ms must be an integer from 0 to 600000")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError("faults: error_rate must be a number from 0 to 1")
    if not isinstance(down, bool):
        raise ValueError("faults: db_down must be true or false")
    if isinstance(growth, bool) or not isinstance(growth, int | float) or not 0 <= growth <= 100:
        raise ValueError("faults: memory_growth_mb_per_s must be a number from 0 to 100")
    path = body.get("slow_path", "")
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ValueError("faults: slow_path must be a path starting with / (or empty for every path)")
    return FaultSpec(slow, float(rate), down, float(growth), path)


class Faults:
    """The active FaultSpec and the memory ballast it grows: anonymous one-MiB mappings, written
    so they are resident, and unmapped when the fault is cleared, so the process's RSS falls back
    (malloc'd memory need not return to the system)."""

    def __init__(self) -> None:
        self.spec = FaultSpec()
        self._ballast: list[mmap.mmap] = []
        self._owed_mb = 0.0
        self._lock = threading.Lock()

    def set(self, spec: FaultSpec) -> None:
        with self._lock:
            self.spec = spec
            if not spec.memory_growth_mb_per_s:
                for chunk in self._ballast:
                    chunk.close()
                self._ballast.clear()
                self._owed_mb = 0.0

    def grow(self, seconds: float) -> None:
        """Called by the heartbeat: allocate what the growth rate owes for ``seconds``."""
        with self._lock:
            rate = self.spec.memory_growth_mb_per_s
            if not rate:
                return
            self._owed_mb += rate * seconds
            while self._owed_mb >= 1 and len(self._ballast) < MAX_BALLAST_MB:
                chunk = mmap.mmap(-1, 2**20)
                chunk.write(b"\x01" * 2**20)
                self._ballast.append(chunk)
                self._owed_mb -= 1

    def ballast_mb(self) -> int:
        return len(self._ballast)
