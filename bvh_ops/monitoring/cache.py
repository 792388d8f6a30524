"""The cache probe: Redis INFO over ``cache_url``: reachable and how fast, used memory against
``maxmemory`` (or the machine's memory where none is set), keyspace hit rate, evictions.

Uses the ``redis`` client (already installed with Prefect, declared in pyproject.toml): it speaks
AUTH, SELECT, TLS (``rediss://``) and RESP3 correctly, which a hand-written INFO-only client
would each have to reimplement. Evictions are a counter since the server started; its rate needs
two samples (the sample store's job), so here it is reported, not judged.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import redis

from bvh_ops.dsn import redact_dsn, scrub
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.thresholds import Limits, above, below

SERVICE = "cache"
ALWAYS = ("cache.reachable", "cache.memory", "cache.hit_rate", "cache.evictions")


def probe_cache(url: str, limits: Limits, *, timeout: float = 5.0) -> list[Check]:
    start = time.monotonic()
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        info = client.info()
    except (redis.RedisError, OSError) as exc:
        reason = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url)
        return [Check("cache.reachable", SERVICE, Status.CRITICAL, None, "ms",
                      f"Redis at {_where(url)} unreachable: {reason}")] + [
            Check(name, SERVICE, Status.UNKNOWN, None, "", "cache unreachable") for name in ALWAYS[1:]]
    finally:
        client.close()
    latency_ms = (time.monotonic() - start) * 1000
    return [
        Check("cache.reachable", SERVICE, Status.OK, round(latency_ms, 1), "ms",
              f"Redis {info.get('redis_version', '?')} at {_where(url)} answered INFO in {latency_ms:.0f} ms"),
        _memory(info, limits), _hit_rate(info, limits),
        Check("cache.evictions", SERVICE, Status.OK, float(info.get("evicted_keys", 0)), "keys",
              f"{info.get('evicted_keys', 0)} keys evicted since start (policy {info.get('maxmemory_policy', '?')})"),
    ]


def _where(url: str) -> str:
    parts = urlsplit(redact_dsn(url))
    return f"{parts.hostname}:{parts.port or 6379}"


def _memory(info: dict, limits: Limits) -> Check:
    used = int(info.get("used_memory", 0))
    maximum = int(info.get("maxmemory", 0))
    of = "maxmemory"
    if not maximum:
        maximum, of = int(info.get("total_system_memory", 0)), "the machine's memory (no maxmemory set)"
    if not maximum:
        return Check("cache.memory", SERVICE, Status.UNKNOWN, None, "%", f"{used} bytes used; no limit known")
    pct = 100.0 * used / maximum
    status = above(pct, limits.memory_warning_percent, limits.memory_critical_percent)
    return Check("cache.memory", SERVICE, status, round(pct, 2), "%",
                 f"{info.get('used_memory_human', used)} used of {of} ({maximum} bytes)")


def _hit_rate(info: dict, limits: Limits) -> Check:
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    lookups = hits + misses
    if not lookups:
        return Check("cache.hit_rate", SERVICE, Status.OK, None, "%", "no lookups yet")
    pct = 100.0 * hits / lookups
    status = below(pct, limits.redis_hit_warning_percent) if lookups >= limits.redis_min_lookups else Status.OK
    return Check("cache.hit_rate", SERVICE, status, round(pct, 2), "%", f"{hits} hits, {misses} misses since start")
