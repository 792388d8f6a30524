"""Monitoring probes against real components: an HTTP(S) server on 127.0.0.1 started here (200
with JSON, 500, slow, trickling, hung), the embedded PostgreSQL, Redis on 127.0.0.1:6379 where one
answers, a repository with a real backup and archived WAL, and `bvh-ops health-check` as a child
process. Nothing waits on the clock: a hung handler is released at teardown, and ages are judged
against an injected ``now``."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from bvh_ops.config import Settings
from bvh_ops.demo.platform.cache import redis_answers
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.monitoring.backups import probe_backups
from bvh_ops.monitoring.cache import probe_cache
from bvh_ops.monitoring.cycle import run_cycle
from bvh_ops.monitoring.database import ALWAYS, probe_database
from bvh_ops.monitoring.http import HttpSession, probe_endpoint
from bvh_ops.monitoring.results import Status
from bvh_ops.monitoring.thresholds import Limits
from bvh_ops.pg.cluster import free_port
from tests.integration.cli import run_cli
from tests.waiting import wait_until

SECRET = "Hunter2-m0nitor"
HEALTHY = {"status": "healthy", "checks": {"database": {"status": "up"}, "cache": {"status": "up"}},
           "draws": [1, 2, 3]}
RELEASE = threading.Event()  # set at teardown: hung handlers return


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, code: int, doc: object, delay: float = 0.0) -> None:
        body = json.dumps(doc).encode()
        if delay:
            RELEASE.wait(delay)  # the server being slow, not the test waiting
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            self._send(200, HEALTHY)
        elif self.path == "/degraded":
            self._send(200, {"status": "degraded", "checks": {"database": {"status": "down"}}, "draws": []})
        elif self.path == "/error":
            self._send(500, {"status": "unhealthy"})
        elif self.path == "/html":
            body = b"<html>ok</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/slowish":
            self._send(200, HEALTHY, delay=0.3)
        elif self.path == "/trickle":  # headers at once, then a byte every 0.2 s: each read is quick
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                if RELEASE.wait(0.2):
                    return
                self.wfile.write(b" ")
                self.wfile.flush()
        elif self.path == "/hang":  # accepts, reads the request, never answers
            RELEASE.wait(120)
        else:
            self._send(404, {"error": "not found"})


@pytest.fixture(scope="module")
def http_base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    RELEASE.set()
    server.shutdown()
    server.server_close()


def _self_signed(tmp_path, days: int):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def https_base(tmp_path_factory):
    cert_file, key_file = _self_signed(tmp_path_factory.mktemp("tls"), days=10)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert_file
    server.shutdown()
    server.server_close()


def endpoint(url: str, *conditions: str, timeout: float = 5.0, **extra):
    return Settings(endpoints=[{"name": "ep", "service": "api", "url": url, "conditions": list(conditions),
                                "timeout_seconds": timeout, **extra}]).endpoints[0]


def probe(ep, limits: Limits | None = None):
    session = HttpSession()
    try:
        return probe_endpoint(ep, limits or Limits(), session)
    finally:
        session.close()


# -- HTTP --------------------------------------------------------------------------------

@pytest.mark.parametrize("path, condition, ok", [
    ("/health", "[STATUS] == 200", True),
    ("/error", "[STATUS] == 200", False),
    ("/error", "[STATUS] == any(500, 503)", True),
    ("/health", "[RESPONSE_TIME] < 5000", True),
    ("/slowish", "[RESPONSE_TIME] < 100", False),
    ("/health", "[BODY].status == healthy", True),
    ("/degraded", "[BODY].status == healthy", False),
    ("/health", "[BODY].checks.database.status == up", True),
    ("/degraded", "[BODY].checks.database.status == up", False),
    ("/health", "len([BODY].draws) == 3", True),
    ("/health", "[BODY].status == pat(heal*)", True),
    ("/html", "[BODY].status == healthy", False),
    ("/html", "[BODY] == pat(*ok*)", True),
    ("/health", "[CONNECTED] == true", True),
])
def test_each_condition_kind(http_base, path, condition, ok):
    (check,) = probe(endpoint(http_base + path, condition))
    assert check.status is (Status.OK if ok else Status.CRITICAL), check.detail
    assert check.value is not None and check.unit == "ms"
    if not ok:
        assert condition.split(" ")[0] in check.detail  # the failed condition is named, with what was seen


def test_500_is_critical_and_says_what_it_saw(http_base):
    (check,) = probe(endpoint(http_base + "/error", "[STATUS] == 200", "[BODY].status == healthy"))
    assert check.status is Status.CRITICAL
    assert check.detail == "HTTP 500, failed: [STATUS] (500) == 200; [BODY].status (unhealthy) == healthy"


def test_slow_but_passing_is_a_warning_above_the_response_time_threshold(http_base):
    (check,) = probe(endpoint(http_base + "/slowish", "[STATUS] == 200"), Limits(response_time_warning_ms=100))
    assert check.status is Status.WARNING and check.value >= 300 and "slower than 100 ms" in check.detail


@pytest.mark.parametrize("path", ["/hang", "/trickle"])
def test_hung_or_trickling_endpoint_is_cut_at_its_timeout_and_critical(http_base, path):
    start = time.monotonic()
    (check,) = probe(endpoint(http_base + path, "[STATUS] == 200", timeout=0.6))
    elapsed = time.monotonic() - start
    assert check.status is Status.CRITICAL
    assert "0.6 s" in check.detail, check.detail
    assert elapsed < 2 * 0.6 + 1.5, elapsed  # cut, not waited out (the trickle alone would take 200 s)


def test_refused_connection_is_critical(http_base):
    (check,) = probe(endpoint(f"http://127.0.0.1:{free_port()}/health", "[STATUS] == 200"))
    assert check.status is Status.CRITICAL and "refused" in check.detail.lower()


def test_credentials_in_an_endpoint_url_never_reach_the_detail(http_base):
    port = free_port()
    (check,) = probe(endpoint(f"http://monitor:{SECRET}@127.0.0.1:{port}/health", "[STATUS] == 200"))
    assert check.status is Status.CRITICAL and SECRET not in check.detail


def test_https_certificate_days_and_expiration_conditions(https_base):
    url, ca = https_base
    ep = endpoint(url + "/health", "[STATUS] == 200", "[CERTIFICATE_EXPIRATION] > 48h", tls_ca_file=str(ca))
    check, cert = probe(ep)
    assert check.status is Status.OK, check.detail
    assert cert.name == "ep:certificate" and 9.9 < cert.value <= 10
    assert cert.status is Status.WARNING  # 10 days left, under the 14-day warning
    (failing, _) = probe(endpoint(url + "/health", "[CERTIFICATE_EXPIRATION] > 30d", tls_ca_file=str(ca)))
    assert failing.status is Status.CRITICAL and "[CERTIFICATE_EXPIRATION]" in failing.detail


def test_an_endpoints_own_ca_file_does_not_need_the_default_bundle(https_base, monkeypatch):
    """The process-wide default TLS context (bvh_ops.tls) is built only for endpoints without
    their own bundle: a default bundle that cannot load (SSL_CERT_FILE pointing nowhere) left an
    endpoint with a good tls_ca_file UNKNOWN, blaming its bundle (found by review)."""
    import bvh_ops.monitoring.http as http

    def broken():
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(http, "default_context", broken)
    url, ca = https_base
    check, _cert = probe(endpoint(url + "/health", "[STATUS] == 200", tls_ca_file=str(ca)))
    assert check.status is Status.OK, check.detail


def test_unreadable_ca_file_is_unknown_not_critical(https_base, tmp_path):
    url, _ = https_base
    (check,) = probe(endpoint(url + "/health", "[STATUS] == 200", tls_ca_file=str(tmp_path / "missing.pem")))
    assert check.status is Status.UNKNOWN and "tls_ca_file" in check.detail


def test_untrusted_certificate_is_critical(https_base):
    url, _ = https_base
    check, cert = probe(endpoint(url + "/health", "[STATUS] == 200"))
    assert check.status is Status.CRITICAL and cert.status is Status.CRITICAL
    assert "certificate" in cert.detail.lower()


# -- the database ------------------------------------------------------------------------

def test_database_probe_on_a_healthy_server(pg):
    checks = {c.name: c for c in probe_database(pg.dsn(), Limits())}
    assert set(ALWAYS) <= set(checks)
    assert checks["database.reachable"].status is Status.OK and checks["database.reachable"].value > 0
    conn = checks["database.connections"]
    assert conn.status is Status.OK and conn.unit == "%" and "max_connections" in conn.detail
    assert checks["database.wraparound"].status is Status.OK and checks["database.wraparound"].value < 50
    assert checks["database.cache_hit_ratio"].unit == "%"
    assert "database.replication_lag" not in checks  # no standby: nothing to report


def test_idle_in_transaction_session_shows_up(pg):
    limits = Limits(idle_in_transaction_warning_seconds=0.0)
    with psycopg.connect(pg.dsn(), application_name="forgot-to-commit") as idle:
        idle.execute("SELECT 1")  # BEGIN implied: idle in transaction from now on

        def seen():
            check = {c.name: c for c in probe_database(pg.dsn(), limits)}["database.idle_in_transaction"]
            return check if check.value and check.value > 0 else None

        check = wait_until(seen, "the idle-in-transaction session seen by the probe", timeout=60)
        assert check.status is Status.WARNING
        assert "forgot-to-commit" in check.detail and "pid" in check.detail
        assert "SELECT" not in check.detail  # query texts are never shown
    after = {c.name: c for c in probe_database(pg.dsn(), Limits())}["database.idle_in_transaction"]
    assert after.status is Status.OK


def test_long_running_transaction_shows_up(pg):
    limits = Limits(transaction_warning_seconds=0.0, transaction_critical_seconds=3600)
    conn = psycopg.connect(pg.dsn(), application_name="long-report", autocommit=True)
    pid = conn.info.backend_pid
    worker = threading.Thread(target=lambda: _swallow(conn.execute, "SELECT pg_sleep(60)"), daemon=True)
    worker.start()
    try:
        def seen():
            check = {c.name: c for c in probe_database(pg.dsn(), limits)}["database.longest_transaction"]
            return check if "long-report" in check.detail and check.value > 0 else None

        check = wait_until(seen, "the long transaction seen by the probe", timeout=60)
        assert check.status is Status.WARNING and f"pid {pid}" in check.detail
    finally:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        worker.join(30)
        conn.close()


def _swallow(fn, *args):
    try:
        fn(*args)
    except psycopg.Error:
        pass


def test_unreachable_database_is_critical_and_the_rest_unknown_without_the_password():
    port = free_port()
    checks = probe_database(f"postgresql://ops:{SECRET}@127.0.0.1:{port}/lottery", Limits(), timeout=2)
    by_name = {c.name: c for c in checks}
    assert by_name["database.reachable"].status is Status.CRITICAL
    assert f"127.0.0.1:{port}" in by_name["database.reachable"].detail
    assert all(by_name[n].status is Status.UNKNOWN for n in ALWAYS[1:])
    assert SECRET not in json.dumps([c.to_json() for c in checks])


# -- the cache ---------------------------------------------------------------------------



@pytest.fixture(scope="module")
def redis_url():
    if not redis_answers():
        pytest.skip("no Redis answering on 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


def test_cache_probe_reads_info(redis_url):
    checks = {c.name: c for c in probe_cache(redis_url, Limits())}
    assert checks["cache.reachable"].status is Status.OK and "Redis" in checks["cache.reachable"].detail
    assert checks["cache.memory"].unit == "%" and checks["cache.memory"].value is not None
    assert checks["cache.hit_rate"].status in (Status.OK, Status.WARNING)
    assert checks["cache.evictions"].status is Status.OK


def test_unreachable_cache_is_critical_without_the_password():
    checks = probe_cache(f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", Limits(), timeout=2)
    assert checks[0].name == "cache.reachable" and checks[0].status is Status.CRITICAL
    assert {c.status for c in checks[1:]} == {Status.UNKNOWN}
    assert SECRET not in json.dumps([c.to_json() for c in checks])


# -- backups -----------------------------------------------------------------------------

@pytest.fixture
def backed_up(pg, fresh_db, repo_dir, make_settings):
    """A repository with one real logical backup and one real archived WAL segment."""
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE draws (id int PRIMARY KEY, drawn_at timestamptz DEFAULT now())")
        conn.execute("INSERT INTO draws (id) SELECT generate_series(1, 50)")
    settings = make_settings(dsn, f"file://{repo_dir}")
    manifest = run_logical_backup(settings).manifest
    return settings, manifest


def _archive_one_segment(settings, pg):
    from bvh_ops.pg.lsn import SEGMENT_OR_PARTIAL
    from bvh_ops.wal.store import wal_push

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_switch_wal()")
    segments = sorted(p for p in (pg.data / "pg_wal").iterdir() if SEGMENT_OR_PARTIAL.fullmatch(p.name))
    assert wal_push(settings, str(segments[0])) == "stored"


def _finished(manifest):
    return dt.datetime.fromisoformat(manifest.finished_at)


def test_backup_ages_against_the_runbook(backed_up, pg):
    settings, manifest = backed_up
    finished = _finished(manifest)
    fresh = {c.name: c for c in probe_backups(settings, finished + dt.timedelta(hours=1), Limits())}
    assert fresh["backups.daily"].status is Status.OK and manifest.backup_id in fresh["backups.daily"].detail
    assert 0.99 < fresh["backups.daily"].value < 1.01
    assert fresh["backups.incremental"].status is Status.CRITICAL  # no physical backup at all
    assert fresh["backups.wal_archiving"].status is Status.CRITICAL  # nothing archived yet
    stale = {c.name: c for c in probe_backups(settings, finished + dt.timedelta(hours=27), Limits())}
    assert stale["backups.daily"].status is Status.CRITICAL and "max 26 h" in stale["backups.daily"].detail

    _archive_one_segment(settings, pg)
    now = dt.datetime.now(dt.UTC)
    lag = {m: {c.name: c for c in probe_backups(settings, now + dt.timedelta(minutes=m), Limits())}
           ["backups.wal_archiving"] for m in (1, 7, 11)}
    assert [lag[m].status for m in (1, 7, 11)] == [Status.OK, Status.WARNING, Status.CRITICAL]
    assert "RPO objective 300 s" in lag[1].detail


def test_untrusted_backups_do_not_count(backed_up, keypair, tmp_path, make_settings):
    settings, manifest = backed_up
    # Another host (another signing key) whose key we do not trust: its manifest is not counted.
    stranger = make_settings(settings.require_database_url(), settings.repository, state_dir=tmp_path / "other")
    check = {c.name: c for c in probe_backups(stranger, _finished(manifest), Limits())}["backups.daily"]
    assert check.status is Status.CRITICAL and "1 backup(s) with an untrusted signature ignored" in check.detail


def test_drill_check_reads_the_ops_database(backed_up, pg, make_settings):
    from bvh_ops.drill.ops import OPS_SCHEMA_SQL
    from bvh_ops.pg.catalog import create_database

    settings, _ = backed_up
    name = f"ops_m{free_port()}"
    create_database(pg.dsn(), name)
    settings = make_settings(settings.require_database_url(), settings.repository, ops_database_url=pg.dsn(name))
    now = dt.datetime.now(dt.UTC)

    def drill_check(at):
        return {c.name: c for c in probe_backups(settings, at, Limits())}["backups.drill"]

    none = drill_check(now)
    assert none.status is Status.CRITICAL and "no DR drill has passed" in none.detail
    with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
        conn.execute(OPS_SCHEMA_SQL)
        conn.execute("INSERT INTO ops.drills VALUES ('d1', %s, %s, 'b', 'logical', true, 60, 10, 900, 300, '{}')",
                     (now - dt.timedelta(days=2, minutes=5), now - dt.timedelta(days=2)))
    assert drill_check(now).status is Status.OK and 1.99 < drill_check(now).value < 2.01
    assert drill_check(now + dt.timedelta(days=7)).status is Status.CRITICAL  # 9 days old: over 8
    with psycopg.connect(pg.dsn(name), autocommit=True) as conn:
        conn.execute("INSERT INTO ops.drills VALUES ('d2', %s, %s, 'b', 'logical', false, 60, 10, 900, 300, '{}')",
                     (now - dt.timedelta(hours=2), now - dt.timedelta(hours=1)))
    failed = drill_check(now)
    assert failed.status is Status.WARNING and "FAILED" in failed.detail


def test_drill_check_is_unknown_when_the_ops_database_is_not_running(backed_up, tmp_path):
    settings, _ = backed_up
    check = {c.name: c for c in probe_backups(settings, dt.datetime.now(dt.UTC), Limits())}["backups.drill"]
    assert check.status is Status.UNKNOWN and "not running" in check.detail


# -- one cycle, and the CLI ----------------------------------------------------------------

def test_cycle_with_a_hung_endpoint_finishes_and_is_critical(http_base, pg):
    settings = Settings(database_url=pg.dsn(), endpoints=[
        {"name": "api", "service": "api", "url": http_base + "/health", "conditions": ["[STATUS] == 200"]},
        {"name": "stuck", "service": "api", "url": http_base + "/hang", "timeout_seconds": 0.5},
    ])
    result = run_cycle(settings)
    by_name = {c.name: c for c in result.checks}
    assert by_name["api"].status is Status.OK
    assert by_name["stuck"].status is Status.CRITICAL
    assert by_name["database.reachable"].status is Status.OK and "host.cpu" in by_name
    assert result.status is Status.CRITICAL
    assert result.wall_seconds < 10 and result.cpu_seconds < 1.0
    assert "backups (repository is not set)" in result.not_monitored


def _cli_env(http_base, pg, *paths: str, **extra: str) -> dict[str, str]:
    endpoints = [{"name": p.strip("/"), "service": "api", "url": http_base + p,
                  "conditions": ["[STATUS] == 200", "[BODY].status == healthy"], "timeout_seconds": 2}
                 for p in paths]
    env = {"BVH_OPS_DATABASE_URL": pg.dsn(), "BVH_OPS_ENDPOINTS": json.dumps(endpoints),
           # The host is shared with other work: its load must not decide these exit codes.
           "BVH_OPS_CPU_WARNING_PERCENT": "100", "BVH_OPS_CPU_CRITICAL_PERCENT": "100",
           "BVH_OPS_MEMORY_WARNING_PERCENT": "100", "BVH_OPS_MEMORY_CRITICAL_PERCENT": "100",
           "BVH_OPS_DISK_WARNING_PERCENT": "100", "BVH_OPS_DISK_CRITICAL_PERCENT": "100",
           "BVH_OPS_LOAD_PER_CORE_WARNING": "1000", "BVH_OPS_LOAD_PER_CORE_CRITICAL": "1000"}
    env.update(extra)
    return env


def test_cli_exit_codes_and_json(http_base, pg, tmp_path):
    healthy = run_cli("health-check", "--json", env=_cli_env(http_base, pg, "/health"), timeout=120)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    doc = json.loads(healthy.stdout)
    assert doc["status"] == "ok" and dt.datetime.fromisoformat(doc["checked_at"]).tzinfo is not None
    assert {"name", "service", "status", "value", "unit", "detail"} == set(doc["checks"][0])
    assert {c["name"] for c in doc["checks"]} >= {"health", "database.reachable", "host.cpu", "host.disk:/"}

    unknown = run_cli("health-check", "--json", env=_cli_env(http_base, pg, "/health",
                                                             BVH_OPS_DISK_PATHS=str(tmp_path / "gone")), timeout=120)
    assert unknown.returncode == 1, unknown.stdout
    assert json.loads(unknown.stdout)["status"] == "unknown"

    critical = run_cli("health-check", env=_cli_env(http_base, pg, "/health", "/error"), timeout=120)
    assert critical.returncode == 2, critical.stdout + critical.stderr
    assert "critical" in critical.stdout and "[STATUS] (500) == 200" in critical.stdout
    assert "overall: critical" in critical.stdout


def test_cli_never_shows_the_database_password(http_base, pg):
    env = _cli_env(http_base, pg, "/health",
                   BVH_OPS_DATABASE_URL=f"postgresql://ops:{SECRET}@127.0.0.1:{free_port()}/lottery")
    for args in (("health-check",), ("health-check", "--json")):
        proc = run_cli(*args, env=env, timeout=120)
        assert proc.returncode == 2
        assert SECRET not in proc.stdout + proc.stderr
        assert "database unreachable at 127.0.0.1:" in proc.stdout


def test_cli_malformed_condition_fails_at_start_naming_endpoint_and_condition(http_base, pg):
    env = _cli_env(http_base, pg)
    env["BVH_OPS_ENDPOINTS"] = json.dumps([{"name": "api-health", "service": "api", "url": http_base + "/health",
                                            "conditions": ["[STATUS] = 200"]}])
    proc = run_cli("health-check", env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "endpoint 'api-health': condition '[STATUS] = 200'" in proc.stderr
