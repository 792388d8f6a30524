"""The running platform's state: configuration, log, cache, database, faults and measurements,
plus the heartbeat thread that samples CPU/memory every second, grows the memory fault, checks
the database every few seconds (so uptime is honest without traffic) and writes a performance
line every minute."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bvh_ops.demo.platform.cache import DEFAULT_REDIS_URL, open_cache
from bvh_ops.demo.platform.db import Database
from bvh_ops.demo.platform.faults import Faults
from bvh_ops.demo.platform.health import ServiceCheck, Snapshot
from bvh_ops.demo.platform.logs import JsonLog
from bvh_ops.demo.platform.metrics import ActiveUsers, Availability, RequestWindow, ResourceSampler
from bvh_ops.errors import BvhOpsError


@dataclass(frozen=True)
class PlatformConfig:
    dsn: str
    log_path: Path
    cache_url: str | None = DEFAULT_REDIS_URL  # None or "memory": the in-process cache
    window_s: float = 60.0  # rolling window of responseTime / errorRate
    slow_request_ms: float = 1000.0  # a request slower than this gets a performance log line
    pool_size: int = 4
    heartbeat_s: float = 2.0  # database check interval
    perf_log_interval_s: float = 60.0
    debug_log: bool = False
    pid_file: Path | None = None  # written once serving, removed at a graceful stop (log rotation's reopen)


class PlatformState:
    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.log = JsonLog(config.log_path, debug=config.debug_log)
        self.cache = open_cache(config.cache_url)
        self.faults = Faults()
        self.availability = Availability()
        self.window = RequestWindow(config.window_s)
        self.payments = RequestWindow(config.window_s)   # deposits only: payment processing errors
        self.logins = RequestWindow(config.window_s)     # login attempts: 401 counted as failed
        self.active = ActiveUsers()
        self.resources = ResourceSampler(str(Path(config.log_path).resolve().parent))
        self.db = Database(config.dsn, size=config.pool_size, is_down=lambda: self.faults.spec.db_down,
                           observe=self.availability.observe)
        self.cache_hits = 0
        self.cache_misses = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.resources.sample()
        self.log.write("application", "platform.started", pid=os.getpid(), cache=self.cache.describe())
        self._thread = threading.Thread(target=self._heartbeat, name="platform-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.log.write("application", "platform.stopped", pid=os.getpid())
        self.db.close_idle()
        self.log.close()

    def _heartbeat(self) -> None:
        last = last_db = last_perf = time.monotonic()
        while not self._stop.wait(1.0):
            now = time.monotonic()
            self.resources.sample()
            self.faults.grow(now - last)
            last = now
            if now - last_db >= self.config.heartbeat_s:
                last_db = now
                try:
                    self.db.ping()
                except BvhOpsError:
                    pass  # observed as down by the pool
            if now - last_perf >= self.config.perf_log_interval_s:
                last_perf = now
                self._perf_line()

    def _perf_line(self) -> None:
        r, w = self.resources.latest, self.window.summary()
        self.log.write("performance", "resources", cpuUsage=r.cpu_percent, memoryUsage=r.memory_percent,
                       memoryMb=r.rss_mb, responseTimeAvg=w.avg_ms, requests=w.count,
                       cacheHits=self.cache_hits, cacheMisses=self.cache_misses)

    def snapshot(self) -> Snapshot:
        """Measure now (blocking: the database and the cache are asked)."""
        try:
            latency = self.db.ping()
            database = ServiceCheck("healthy", "SELECT 1 answered", latency)
            connections = self.db.connection_counts()
        except BvhOpsError as exc:
            database, connections = ServiceCheck("unhealthy", str(exc)), None
        if self.cache.ping():
            cache = ServiceCheck("healthy", self.cache.describe())
        else:
            cache = ServiceCheck("unhealthy", f"{self.cache.describe()} not answering")
        return Snapshot(
            now=datetime.now(UTC), database=database, cache=cache, cache_backend=self.cache.backend,
            cache_prefix=self.cache.prefix, window=self.window.summary(), window_s=self.config.window_s,
            payments=self.payments.summary(), logins=self.logins.summary(), resources=self.resources.latest,
            active_users=self.active.count(), db_connections=connections,
            uptime_percent=self.availability.uptime_percent(), uptime_seconds=self.availability.seconds(),
            faults={**self.faults.spec.as_dict(), "ballast_mb": self.faults.ballast_mb()}, pid=os.getpid())
