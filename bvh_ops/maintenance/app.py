"""Application maintenance, the weekly stage against the platform's cache, and the log-rotation
coordination rule.

Sessions: the platform keeps them as ``session:<token>`` keys in Redis with a TTL (or, without a
Redis, in its in-process cache with expiry): Redis removes expired keys itself, so there is
nothing to delete. The stage says so, counts the live sessions in batches (SCAN, never KEYS),
and reports sessions *without* a TTL (they would never expire) as a finding - never deleting
them: the platform set them. With ``cache_url`` configured it also reviews Redis INFO the way
the monitor judges it (hit rate, memory against maxmemory, evictions): what is not OK is a
finding.

Log rotation (``rotation_plan``, pure; not yet carried out by the flow - the sample platform
keeps its log file open and has no reopen signal, so a rename would only move its writes): a
platform log is rotated (renamed) only once ``logs collect`` committed that file up to its end
(its stored offset equals its size), and an old rotated file is deleted only when it was
collected to its end. The collector follows a renamed file by its inode, so lines written
between the check and the rename are read on from the renamed file: nothing is lost and nothing
read twice. copytruncate is refused: lines written between its copy and its truncate exist only
in the copy, a new inode the collector would read from 0 (duplicates) or not at all (loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bvh_ops.logs.offsets import Stored

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


@dataclass(frozen=True)
class LogFile:
    path: str
    file_id: str     # device:inode, as the collector knows it
    size: int


@dataclass(frozen=True)
class RotationStep:
    action: str      # rotate | delete | wait
    path: str
    reason: str


def _collected(f: LogFile, stored: Mapping[str, Stored]) -> int:
    s = stored.get(f.file_id)
    return 0 if s is None else min(s.offset, f.size)


def rotation_plan(active: LogFile | None, rotated: list[LogFile], stored: Mapping[str, Stored], *,
                  max_bytes: int, keep: int, method: str = "rename") -> list[RotationStep]:
    """What to do with a platform log: rotate the active file past ``max_bytes`` only when the
    collector committed it to its end; delete the rotated files beyond the newest ``keep`` only
    when collected to their end; otherwise wait, saying how much is not yet collected. ``rotated``
    newest first; ``stored`` is the source's ops.log_offsets by file_id."""
    if method != "rename":
        return [RotationStep("wait", active.path if active else "-",
                             f"{method} refused: lines written between the copy and the truncate would be lost or "
                             "read twice; rotate by rename (the collector follows the inode)")]
    steps = []
    if active is not None and active.size >= max_bytes:
        behind = active.size - _collected(active, stored)
        if behind:
            steps.append(RotationStep("wait", active.path, f"{behind} bytes not yet collected: run `bvh-ops logs "
                                                           "collect` first, rotation waits for it"))
        else:
            steps.append(RotationStep("rotate", active.path, f"{active.size} bytes >= {max_bytes}, collected to "
                                                             "its end"))
    for f in rotated[keep:]:
        behind = f.size - _collected(f, stored)
        steps.append(RotationStep("wait", f.path, f"{behind} bytes not yet collected") if behind else
                     RotationStep("delete", f.path, f"beyond the newest {keep}, collected to its end"))
    return steps
