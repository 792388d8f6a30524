"""Application maintenance against real services: the rotation rule on a real log collected by
the real collector (offsets in a real ops database), and the session/cache review on the Redis
at 127.0.0.1:6379 (skipped cleanly where none answers)."""

from __future__ import annotations

import os
import secrets

import psycopg
import pytest

from bvh_ops.config import Settings
from bvh_ops.demo.platform.logs import JsonLog
from bvh_ops.logs import store
from bvh_ops.logs.rotation import LogFile, rotation_plan
from bvh_ops.maintenance.app import cache_stage
from tests.integration.test_logs_collect import app_source, ops, run_collect, settings_for, write_n  # noqa: F401

REDIS = "redis://127.0.0.1:6379/0"


def logfile(path) -> LogFile:
    st = os.stat(path)
    return LogFile(str(path), f"{st.st_dev}:{st.st_ino}", st.st_size)


def test_a_rotated_file_is_deleted_only_once_collected_to_its_end(ops, tmp_path):  # noqa: F811
    path = tmp_path / "logs" / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 50)
    settings = settings_for(tmp_path, ops, app_source(path))

    def plan():
        old = path.with_name("app.log.1")
        with psycopg.connect(ops) as conn:
            return rotation_plan(logfile(path), [logfile(old)] if old.exists() else [],
                                 store.load_offsets(conn, "app"), max_bytes=100, keep=0)

    (step,) = plan()                                               # nothing collected: renamed all the same
    assert step.action == "rotate" and "still to collect" in step.reason
    path.rename(path.with_name("app.log.1"))
    log.reopen()
    write_n(log, 50, 5)
    assert [(s.action, s.path.rsplit("/", 1)[1]) for s in plan()] == [("rotate", "app.log"), ("wait", "app.log.1")]
    run_collect(settings, ops)                                     # .1 read to its end from its new name
    assert [(s.action, s.path.rsplit("/", 1)[1]) for s in plan()] == [("rotate", "app.log"), ("delete", "app.log.1")]
    log.close()


def redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001
        return False


def test_without_cache_url_sessions_are_reported_as_self_expiring(tmp_path):
    actions, findings, section = cache_stage(Settings(state_dir=tmp_path))
    assert actions[0]["status"] == "skipped" and "expire them themselves" in actions[0]["detail"]
    assert findings == [] and section == {}


@pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_sessions_counted_and_keys_without_ttl_reported_not_deleted(tmp_path):
    import redis

    client = redis.Redis.from_url(REDIS)
    prefix = f"bvh-test-{secrets.token_hex(4)}:"
    try:
        for i in range(30):
            client.set(f"{prefix}session:{i}", "1", ex=600)
        client.set(f"{prefix}session:forever", "1")
        actions, findings, section = cache_stage(Settings(state_dir=tmp_path, cache_url=REDIS))
        (a,) = actions
        assert a["status"] == "done" and "Redis expires sessions itself" in a["detail"]
        assert section["sessions"] >= 31 and section["sessions_without_ttl"] >= 1
        assert {c["name"] for c in section["checks"]} >= {"cache.hit_rate", "cache.memory", "cache.evictions"}
        assert any(f["kind"] == "session_without_ttl" for f in findings)
        assert client.exists(f"{prefix}session:forever")           # reported, never deleted
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
