"""The sample platform against the real thing: its own process over HTTP, an embedded PostgreSQL
database of its own (the session's sample database is never touched), Redis where one answers on
127.0.0.1:6379. The runbook's endpoint shapes, the workload's purchases and deposits in the
database and in the audit log, each fault showing up where a probe would look and going away
again, and no password in the logs."""

from __future__ import annotations

import signal

import psycopg
import pytest

from bvh_ops.demo.platform import WorkloadDriver, read_lines, sample_password, serve_platform
from bvh_ops.demo.platform.cache import redis_answers
from bvh_ops.demo.sample import LOTTERY_INVARIANTS, load_sample
from bvh_ops.pg.catalog import create_database
from bvh_ops.pg.cluster import free_port
from tests.waiting import wait_until

USERS = 50  # users at scale 0.05
WINDOW_S = 3.0  # a short rolling window, so a fault shows (and clears) within seconds
SYSTEM_METRICS = {"responseTime", "memoryUsage", "cpuUsage", "activeUsers", "databaseConnections",
                  "errorRate", "uptime"}


@pytest.fixture(scope="module")
def platform_db(pg) -> str:
    create_database(pg.dsn(), "platform_sample")
    load_sample(pg.dsn("platform_sample"), scale=0.05)
    yield pg.dsn("platform_sample")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "platform_sample" WITH (FORCE)')


@pytest.fixture(scope="module")
def platform(platform_db, tmp_path_factory):
    log = tmp_path_factory.mktemp("platform") / "platform.jsonl"
    handle = serve_platform(platform_db, "127.0.0.1", 0, log, window_s=WINDOW_S)
    yield handle
    # uvicorn drains, then re-raises SIGTERM: killed by the signal it was sent, after a clean stop.
    assert handle.stop() in (0, -signal.SIGTERM), handle.output_path.read_text()[-2000:]
    assert read_lines(handle.log_path)[-1]["event"] == "platform.stopped"


@pytest.fixture(autouse=True)
def no_faults_after(request):
    yield
    if "platform" in request.fixturenames:
        request.getfixturevalue("platform").set_faults()


def driver(platform, **kw) -> WorkloadDriver:
    return WorkloadDriver(platform.url, users=USERS, **{"rate": 30.0, "threads": 3, **kw})


def get(platform, path: str) -> tuple[int, dict]:
    r = platform.get(path)
    return r.status_code, r.json()


def metrics(platform) -> dict:
    return get(platform, "/api/metrics")[1]["system"]


def test_monitoring_endpoints_answer_in_the_runbook_shapes(platform, platform_db):
    code, health = get(platform, "/api/health")
    assert code == 200
    assert set(health) == {"status", "timestamp", "services", "metrics"}
    assert health["status"] == "healthy"
    assert health["timestamp"].endswith("Z")
    assert health["services"] == {"database": "healthy", "cache": "healthy", "api": "healthy"}
    assert set(health["metrics"]) == {"responseTime", "uptime", "activeUsers"}
    assert health["metrics"]["uptime"] == 100.0

    code, detailed = get(platform, "/api/health/detailed")
    assert code == 200 and detailed["status"] == "healthy"
    assert set(detailed["metrics"]) == SYSTEM_METRICS
    assert detailed["services"]["database"]["latencyMs"] > 0
    assert detailed["services"]["cache"]["backend"] in ("redis", "memory")
    assert detailed["process"]["pid"] == platform.process.pid
    assert detailed["process"]["rssMb"] > 10
    assert all(not v for k, v in detailed["faults"].items())

    code, m = get(platform, "/api/metrics")
    assert code == 200
    assert set(m["performance"]["responseTime"]) == {"avg", "p95", "p99"}
    assert set(m["performance"]["throughput"]) == {"requestsPerSecond", "requestsPerMinute"}
    assert {"memoryUsage", "cpuUsage", "diskUsage"} <= set(m["resources"])
    assert 0 < m["resources"]["memoryUsage"] < 100 and 0 < m["resources"]["diskUsage"] <= 100
    assert set(m["system"]) == SYSTEM_METRICS
    # databaseConnections is the platform's own sessions, as pg_stat_activity shows them.
    with psycopg.connect(platform_db) as conn:
        ours = conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'bvh-platform'").fetchone()[0]
    assert m["system"]["databaseConnections"] == ours >= 1

    code, status = get(platform, "/api/status")
    assert code == 200
    assert status["systemStatus"] == "healthy" and status["status"] == "healthy"
    assert set(status["services"]) == {"database", "cache", "api"}
    assert all(s["available"] for s in status["services"].values())
    assert set(status["metrics"]) == SYSTEM_METRICS
    assert status["uptime"]["percent"] == 100.0 and status["uptime"]["seconds"] > 0

    # A business endpoint, read through the cache the second time.
    first, second = platform.get("/api/draws").json(), platform.get("/api/draws").json()
    assert first["draws"] and first["draws"] == second["draws"] and second["cached"]
    assert {"id", "name", "status", "drawAt", "jackpot"} == set(first["draws"][0])


def test_workload_buys_and_deposits_through_the_api_into_the_database_and_the_audit_log(platform, platform_db):
    def counts() -> tuple[int, ...]:
        with psycopg.connect(platform_db) as conn:
            return conn.execute(
                "SELECT (SELECT count(*) FROM tickets), "
                "(SELECT count(*) FROM transactions WHERE kind = 'ticket_purchase' AND reference LIKE 'api-%'), "
                "(SELECT count(*) FROM transactions WHERE kind = 'deposit' AND reference LIKE 'api-%'), "
                "(SELECT count(*) FROM security_events WHERE kind = 'failed_login')").fetchone()

    before, seen = counts(), len(read_lines(platform.log_path))
    with driver(platform, bad_login_share=0.3, deposit_share=0.3) as work:
        wait_until(lambda: work.stats.purchases >= 15 and work.stats.deposits >= 3 and work.stats.failed_logins >= 2,
                   "purchases, deposits and refused logins through the API")
        active = metrics(platform)["activeUsers"]
    stats = work.stats
    assert stats.errors == 0, stats
    assert active >= 1

    tickets, purchases, deposits, failed = (a - b for a, b in zip(counts(), before, strict=True))
    assert tickets == purchases == stats.purchases
    assert deposits == stats.deposits
    assert failed == stats.failed_logins
    with psycopg.connect(platform_db) as conn:  # every purchase and deposit kept the books balanced
        for name, sql in LOTTERY_INVARIANTS:
            assert conn.execute(sql).fetchall() == [], name

    lines = read_lines(platform.log_path)[seen:]
    audit = [x for x in lines if x["category"] == "audit"]
    buys = [x for x in audit if x["event"] == "ticket.purchase"]
    deposits = [x for x in audit if x["event"] == "wallet.deposit"]
    assert len(buys) == stats.purchases and len(deposits) == stats.deposits
    assert all(x["amount"] == 5.9 and x["userId"] and x["ticketId"] for x in buys)
    assert all(x["amount"] in (20, 50, 100, 250) and x["currency"] == "ILS" for x in deposits)
    security = [x for x in lines if x["category"] == "security"]
    assert sum(x["event"] == "auth.login" for x in security) == stats.logins
    assert sum(x["event"] == "auth.login_failed" for x in security) == stats.failed_logins
    assert all({"timestamp", "level", "category", "event", "service"} <= set(x) for x in lines)

    # No password (right or deliberately wrong) and no session token anywhere in the log.
    text = platform.log_path.read_text() + platform.output_path.read_text()
    for uid in range(1, USERS + 1):
        assert sample_password(f"user{uid}@example.org") not in text
    assert not [k for x in lines for k in x if "password" in k.lower() or "token" in k.lower()]


def test_slow_fault_raises_response_time_above_the_threshold_and_clears(platform):
    with driver(platform):
        platform.set_faults(slow_ms=1200)
        m = wait_until(lambda: (m := metrics(platform))["responseTime"] > 1000 and m, "responseTime above 1000 ms")
        assert m["responseTime"] > 1000
        health = get(platform, "/api/health")[1]
        assert health["status"] == "degraded" and health["services"]["api"] == "degraded"
        platform.set_faults()
        wait_until(lambda: metrics(platform)["responseTime"] < 1000, "responseTime back under 1000 ms")
        wait_until(lambda: get(platform, "/api/health")[1]["status"] == "healthy", "healthy again")
    slow = [x for x in read_lines(platform.log_path) if x["event"] == "request.slow"]
    assert slow and all(x["category"] == "performance" and x["durationMs"] > 1000 for x in slow)


def test_error_rate_fault_shows_in_error_rate_and_clears(platform):
    with driver(platform) as work:
        platform.set_faults(error_rate=0.5)
        wait_until(lambda: metrics(platform)["errorRate"] > 10, "errorRate above 10 %")
        status = get(platform, "/api/status")[1]
        assert status["systemStatus"] == "warning" and status["services"]["api"]["status"] == "degraded"
        assert work.stats.errors > 0
        platform.set_faults()
        wait_until(lambda: metrics(platform)["errorRate"] <= 1.0, "errorRate back under 1 %")
        wait_until(lambda: get(platform, "/api/status")[1]["systemStatus"] == "healthy", "healthy again")
    failed = [x for x in read_lines(platform.log_path) if x["event"] == "request.failed"]
    assert failed and all(x["category"] == "application" and x["status"] == 500 for x in failed)


def test_db_down_makes_health_unhealthy_and_recovery_makes_it_healthy(platform):
    platform.set_faults(db_down=True)
    code, health = get(platform, "/api/health")
    assert code == 503
    assert health["status"] == "unhealthy" and health["services"]["database"] == "unhealthy"
    status = get(platform, "/api/status")[1]
    assert status["systemStatus"] == "critical"
    assert status["services"]["database"]["status"] == "unhealthy"
    assert status["services"]["database"]["available"] is False
    assert status["metrics"]["databaseConnections"] is None  # not measurable, never a made-up 0
    login = platform._client.post(platform.url + "/api/auth/login",
                                  json={"email": "user1@example.org", "password": sample_password("user1@example.org")})
    assert login.status_code == 503
    wait_until(lambda: get(platform, "/api/health")[1]["metrics"]["uptime"] < 100, "uptime below 100 %")

    platform.set_faults()
    # 200 at once; "healthy" once the 503s answered meanwhile have left the error-rate window.
    assert get(platform, "/api/health")[0] == 200
    health = wait_until(lambda: (h := get(platform, "/api/health")[1])["status"] == "healthy" and h, "healthy again")
    assert health["services"]["database"] == "healthy"
    assert metrics(platform)["databaseConnections"] >= 1


def test_memory_growth_fault_grows_the_process_and_clearing_frees_it(platform):
    def rss() -> float:
        return get(platform, "/api/health/detailed")[1]["process"]["rssMb"]

    base = rss()
    platform.set_faults(memory_growth_mb_per_s=40)
    wait_until(lambda: rss() >= base + 60, "60 MB more resident memory", interval=0.2)
    assert metrics(platform)["memoryUsage"] > 0
    platform.set_faults()
    assert get(platform, "/api/health/detailed")[1]["faults"]["ballast_mb"] == 0
    wait_until(lambda: rss() < base + 30, "resident memory back near where it was", interval=0.2)


def test_faults_are_validated(platform):
    for body in ({"slow_ms": -1}, {"error_rate": 2}, {"db_down": "yes"}, {"nonsense": 1}, [1]):
        r = platform._client.post(platform.url + "/admin/faults", json=body)
        assert r.status_code == 400, body
    assert get(platform, "/api/health")[1]["status"] == "healthy"


def test_cache_is_redis_where_one_answers(platform):
    if not redis_answers():
        pytest.skip("no Redis answers on 127.0.0.1:6379")
    import redis

    cache = get(platform, "/api/health/detailed")[1]["services"]["cache"]
    assert cache["backend"] == "redis" and cache["status"] == "healthy"
    with driver(platform, rate=20) as work:
        wait_until(lambda: work.stats.logins >= 1, "a login")
    # The session lives in Redis, under this platform's own key prefix.
    prefix = cache["prefix"]
    assert prefix.startswith("bvh-platform:")
    assert list(redis.Redis(host="127.0.0.1", port=6379).scan_iter(match=f"{prefix}session:*", count=1000))


def test_falls_back_to_an_in_process_cache_when_redis_does_not_answer(platform_db, tmp_path):
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with serve_platform(platform_db, "127.0.0.1", 0, tmp_path / "p.jsonl", cache_url=nobody) as other:
        code, detailed = get(other, "/api/health/detailed")
        assert code == 200 and detailed["status"] == "healthy"
        assert detailed["services"]["cache"]["backend"] == "memory"
        with driver(other, rate=20) as work:
            wait_until(lambda: work.stats.purchases >= 2, "purchases with the in-process cache")
        assert work.stats.errors == 0


@pytest.mark.parametrize("fault, endpoint", [
    ({"db_down": True}, "api-health"),
    ({"slow_ms": 1500}, "api-health"),
    ({"error_rate": 0.6}, "api-errors"),
], ids=["database-down", "slow", "errors"])
def test_health_check_probes_see_each_fault_and_the_recovery(platform, fault, endpoint):
    """bvh-ops's own probes (bvh_ops.monitoring, Gatus-style conditions) against the sample
    platform: each fault turns its check critical, clearing it turns the check ok again."""
    from bvh_ops.config import Settings
    from bvh_ops.monitoring.cycle import run_cycle
    from bvh_ops.monitoring.results import Status

    settings = Settings(endpoints=[
        {"name": "api-health", "service": "api", "url": platform.url + "/api/health", "timeout_seconds": 5,
         "conditions": ["[STATUS] == 200", "[BODY].status == healthy", "[RESPONSE_TIME] < 1000"]},
        {"name": "api-errors", "service": "api", "url": platform.url + "/api/metrics", "timeout_seconds": 5,
         "conditions": ["[STATUS] == 200", "[BODY].system.errorRate < 1"]},
    ])

    def status() -> Status:
        return {c.name: c for c in run_cycle(settings).checks}[endpoint].status

    with driver(platform):
        wait_until(lambda: status() is Status.OK, f"{endpoint} ok before the fault")
        platform.set_faults(**fault)
        wait_until(lambda: status() is Status.CRITICAL, f"{endpoint} critical during {fault}")
        platform.set_faults()
        wait_until(lambda: status() is Status.OK, f"{endpoint} ok after the recovery")


def test_payment_errors_fire_the_payment_processing_alert(platform):
    """Deposits failing (the error_rate fault) show in /api/metrics ``payments`` and, probed as the
    ``payments`` service, fire the runbook's critical "payment processing errors"; they clear."""
    from datetime import UTC, datetime, timedelta

    from bvh_ops.alerting.engine import Alerter
    from bvh_ops.config import Settings
    from bvh_ops.monitoring.cycle import run_cycle

    settings = Settings(endpoints=[
        {"name": "api-payments", "service": "payments", "url": platform.url + "/api/metrics", "timeout_seconds": 5,
         "conditions": ["[STATUS] == 200", "[BODY].payments.errorRate < 1"]}])
    alerter, at = Alerter(["email"]), [datetime.now(UTC)]

    def observe():
        at[0] += timedelta(seconds=30)
        return alerter.observe(run_cycle(settings, at[0]).checks, at[0])

    def firing() -> bool:
        return any(s.alert.name == "payment processing errors" and s.phase == "firing"
                   for s in alerter.states.values())

    with driver(platform, deposit_share=0.9) as work:
        wait_until(lambda: get(platform, "/api/metrics")[1]["payments"]["requests"] > 0, "deposits measured")
        observe()
        assert not firing()
        platform.set_faults(error_rate=0.8)
        wait_until(lambda: (observe(), firing())[1], "payment processing errors firing")
        payments = get(platform, "/api/metrics")[1]["payments"]
        assert payments["errors"] > 0 and payments["errorRate"] >= 1
        platform.set_faults()
        wait_until(lambda: get(platform, "/api/metrics")[1]["payments"]["errorRate"] < 1, "payments recovered")
        wait_until(lambda: (observe(), not firing())[1], "payment processing errors resolved")
        assert work.stats.deposits > 0


def test_failed_logins_are_counted_for_the_spike_warning(platform):
    """Bad passwords show as failed logins in /api/metrics ``logins``: the condition the README
    gives for the runbook's "failed-login spike" warning turns critical (the rule's bad sample)."""
    from bvh_ops.config import Settings
    from bvh_ops.monitoring.cycle import run_cycle
    from bvh_ops.monitoring.results import Status

    settings = Settings(endpoints=[
        {"name": "api-logins", "service": "logins", "url": platform.url + "/api/metrics", "timeout_seconds": 5,
         "conditions": ["[STATUS] == 200", "[BODY].logins.failedPerMinute < 30"]}])
    with driver(platform, bad_login_share=0.9, rate=40.0) as work:
        wait_until(lambda: get(platform, "/api/metrics")[1]["logins"]["failed"] >= 1, "failed logins counted")
        wait_until(lambda: run_cycle(settings).checks[0].status is Status.CRITICAL, "the spike condition")
        logins = get(platform, "/api/metrics")[1]["logins"]
        assert logins["attempts"] >= logins["failed"] > 0 and logins["failedPercent"] > 0
        assert work.stats.failed_logins > 0


def test_the_platform_writes_its_pid_and_reopens_its_log_on_sigusr1(platform_db, tmp_path):
    """What a log rotation relies on: the pid file beside the log (a dot file: outside a <log>* glob), and
    SIGUSR1 making the platform write a new file where the old one was renamed away."""
    import os
    import signal

    from bvh_ops.demo.platform.logs import read_lines
    from bvh_ops.demo.platform.serve import pid_file_of
    from tests.waiting import wait_until

    log = tmp_path / "p.jsonl"
    with serve_platform(platform_db, "127.0.0.1", 0, log, cache_url="memory") as other:
        pid_file = pid_file_of(log)
        assert pid_file.name == ".p.jsonl.writer" and int(pid_file.read_text()) == other.process.pid
        log.rename(tmp_path / "p.jsonl.1")
        os.kill(other.process.pid, signal.SIGUSR1)
        wait_until(log.exists, "a new log file")
        other._client.post(other.url + "/api/auth/login", json={"email": "nobody@example.com", "password": "x"})
        wait_until(lambda: any(r["event"] == "auth.login_failed" for r in read_lines(log)), "a line in the new file")
    assert not pid_file.exists()  # removed when the platform stops
