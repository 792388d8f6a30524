"""Application maintenance: the weekly stage against the platform's cache.

Sessions: the platform keeps them as ``session:<token>`` keys in Redis with a TTL (or, without a
Redis, in its in-process cache with expiry): Redis removes expired keys itself, so there is
nothing to delete. The stage says so, counts the live sessions in batches (SCAN, never KEYS),
and reports sessions *without* a TTL (they would never expire) as a finding - never deleting
them: the platform set them. With ``cache_url`` configured it also reviews Redis INFO the way
the monitor judges it (hit rate, memory against maxmemory, evictions): what is not OK is a
finding.

Log rotation is the logs package's (bvh_ops.logs.rotation: the rule; bvh_ops.logs.rotate: carrying
it out, in cleanup-logs).
"""

from __future__ import annotations

from typing import Any

SESSION_PATTERN = "*session:*"
SCAN_BATCH = 1000
SCAN_LIMIT = 1_000_000     # keys looked at, at most (a huge keyspace is sampled, and says so)


def _finding(kind: str, obj: str, severity: str, detail: str) -> dict[str, str]:
    return {"kind": kind, "object": obj, "severity": severity, "detail": detail}


def cache_stage(settings) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, Any]]:
    """(actions, findings, section) of the session and cache review."""
    action = {"action": "sessions", "object": "platform cache", "status": "skipped", "seconds": 0.0,
              "before": None, "after": None, "sql": None}
    if settings.cache_url is None:
        return [{**action, "detail": "no cache_url: the platform's sessions live in Redis with a TTL or in its "
                                     "in-process cache with expiry, both expire them themselves; nothing to "
                                     "remove and no Redis INFO to review"}], [], {}
    import time

    import redis

    from bvh_ops.monitoring.cache import _where, probe_cache
    from bvh_ops.monitoring.results import Status
    from bvh_ops.monitoring.thresholds import Limits

    url = settings.cache_url.get_secret_value()
    where = _where(url)
    action["object"] = f"redis {where}"
    findings = []
    checks = probe_cache(url, Limits.from_settings(settings))
    section: dict[str, Any] = {"redis": where, "checks": [{"name": c.name, "status": str(c.status), "value": c.value,
                                                            "detail": c.detail} for c in checks]}
    for c in checks:
        if c.status in (Status.WARNING, Status.CRITICAL):
            findings.append(_finding("cache", c.name, str(c.status).lower(), c.detail))
    if checks[0].status is not Status.OK:
        return [{**action, "status": "failed", "detail": checks[0].detail}], findings, section
    t0 = time.monotonic()
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        expired = int(client.info("stats").get("expired_keys", 0))
        live = no_ttl = seen = 0
        cursor = 0
        while True:
            cursor, keys = client.scan(cursor, match=SESSION_PATTERN, count=SCAN_BATCH)
            if keys:
                with client.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.ttl(k)
                    ttls = pipe.execute()
                live += sum(1 for t in ttls if t != -2)
                no_ttl += sum(1 for t in ttls if t == -1)
            seen += SCAN_BATCH
            if cursor == 0 or seen >= SCAN_LIMIT:
                break
    except (redis.RedisError, OSError) as exc:
        return [{**action, "status": "failed", "detail": f"session scan: {type(exc).__name__}"}], findings, section
    finally:
        client.close()
    sampled = "" if cursor == 0 else f" (first {SCAN_LIMIT} keys only)"
    section.update(sessions=live, sessions_without_ttl=no_ttl, expired_keys=expired)
    if no_ttl:
        findings.append(_finding("session_without_ttl", f"redis {where}", "warning",
                                 f"{no_ttl} of {live} session keys have no TTL and never expire: the platform "
                                 "must set one (they are not deleted here)"))
    return [{**action, "status": "done", "seconds": round(time.monotonic() - t0, 3),
             "after": {"sessions": live, "without_ttl": no_ttl, "expired_since_start": expired},
             "detail": f"Redis expires sessions itself (TTL): {live} live session keys{sampled}, {no_ttl} without a "
                       f"TTL; {expired} keys expired since Redis started"}], findings, section
