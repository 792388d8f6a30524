"""What the platform measures about itself: a rolling window of API request durations and
status codes, availability since start, active users, and this process's memory and CPU.
The summaries are pure functions over plain samples; the recorders only keep samples."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class RequestSample:
    at: float  # monotonic seconds when the response finished
    duration_ms: float
    status: int


@dataclass(frozen=True)
class WindowSummary:
    count: int
    avg_ms: float
    p95_ms: float
    p99_ms: float
    errors: int  # 5xx responses
    error_rate: float  # percent of responses that were 5xx
    requests_per_second: float
    client_errors: int = 0  # 401 responses (failed logins, on the login window)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(samples: list[RequestSample], *, now: float, window_s: float) -> WindowSummary:
    """Response times and error rate over the samples that finished in the last ``window_s``."""
    recent = [s for s in samples if now - s.at <= window_s]
    durations = sorted(s.duration_ms for s in recent)
    errors = sum(1 for s in recent if s.status >= 500)
    n = len(recent)
    return WindowSummary(
        count=n,
        avg_ms=round(sum(durations) / n, 2) if n else 0.0,
        p95_ms=round(percentile(durations, 95), 2),
        p99_ms=round(percentile(durations, 99), 2),
        errors=errors,
        error_rate=round(100.0 * errors / n, 2) if n else 0.0,
        requests_per_second=round(n / window_s, 2),
        client_errors=sum(1 for s in recent if s.status == 401),
    )


class RequestWindow:
    """The samples of the last ``window_s`` seconds (older ones dropped as new ones arrive)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[RequestSample] = deque()
        self._lock = threading.Lock()

    def record(self, duration_ms: float, status: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._samples.append(RequestSample(now, duration_ms, status))
            while self._samples and now - self._samples[0].at > self.window_s:
                self._samples.popleft()

    def summary(self) -> WindowSummary:
        with self._lock:
            samples = list(self._samples)
        return summarize(samples, now=time.monotonic(), window_s=self.window_s)


class Availability:
    """Seconds up and down since start, from the database's reachability as observed by requests
    and the heartbeat: uptime % = up / (up + down). The platform counts as up until seen down."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._since = self.started
        self._up = True
        self._down_s = 0.0
        self._lock = threading.Lock()

    def observe(self, up: bool) -> None:
        now = time.monotonic()
        with self._lock:
            if up == self._up:
                return
            if not self._up:
                self._down_s += now - self._since
            self._up, self._since = up, now

    @property
    def up(self) -> bool:
        return self._up

    def uptime_percent(self) -> float:
        now = time.monotonic()
        with self._lock:
            down = self._down_s + (0.0 if self._up else now - self._since)
        total = max(now - self.started, 1e-9)
        return round(100.0 * (1.0 - down / total), 3)

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)


class ActiveUsers:
    """Distinct users with an authenticated request in the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        self._seen: dict[int, float] = {}
        self._lock = threading.Lock()

    def seen(self, user_id: int) -> None:
        with self._lock:
            self._seen[user_id] = time.monotonic()

    def count(self) -> int:
        now = time.monotonic()
        with self._lock:
            self._seen = {u: t for u, t in self._seen.items() if now - t <= self.window_s}
            return len(self._seen)


@dataclass(frozen=True)
class Resources:
    cpu_percent: float  # this process, share of the whole machine (0..100)
    memory_percent: float  # this process's RSS as a share of physical memory
    rss_mb: float
    disk_percent: float  # the filesystem holding the log file


class ResourceSampler:
    """psutil readings of this process, refreshed by :meth:`sample` (the heartbeat calls it every
    second, so CPU is measured over a second, not over the gap between two HTTP requests)."""

    def __init__(self, disk_path: str) -> None:
        self._proc = psutil.Process()
        self._cpus = psutil.cpu_count() or 1
        self._disk_path = disk_path
        self._proc.cpu_percent(None)
        self.latest = Resources(0.0, 0.0, 0.0, 0.0)

    def sample(self) -> Resources:
        with self._proc.oneshot():
            cpu = self._proc.cpu_percent(None) / self._cpus
            rss = self._proc.memory_info().rss
            mem = self._proc.memory_percent()
        disk = psutil.disk_usage(self._disk_path).percent
        self.latest = Resources(round(cpu, 2), round(mem, 2), round(rss / 2**20, 1), disk)
        return self.latest
