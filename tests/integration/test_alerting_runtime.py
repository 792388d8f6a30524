"""Alerting end to end with real servers on 127.0.0.1: a platform endpoint that fails and
recovers, an SMTP sink, a Slack-format webhook receiver and a Twilio-shaped SMS gateway, the ops
database on the embedded PostgreSQL. The probe clock is injected (cycles 30 s apart, no
sleeping); delivery runs on its real threads."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest

from bvh_ops.alerting.runtime import AlertingRuntime
from bvh_ops.config import load_settings
from bvh_ops.demo.receivers import HttpReceiver, SmtpSink
from bvh_ops.monitoring.cycle import run_cycle
from tests.integration.cli import run_cli
from tests.waiting import wait_until

CALM_HOST = {"BVH_OPS_CPU_WARNING_PERCENT": "100", "BVH_OPS_CPU_CRITICAL_PERCENT": "100",
             "BVH_OPS_MEMORY_WARNING_PERCENT": "100", "BVH_OPS_MEMORY_CRITICAL_PERCENT": "100",
             "BVH_OPS_DISK_WARNING_PERCENT": "100", "BVH_OPS_DISK_CRITICAL_PERCENT": "100",
             "BVH_OPS_LOAD_PER_CORE_WARNING": "1000", "BVH_OPS_LOAD_PER_CORE_CRITICAL": "1000"}
HOOK_TOKEN = "T000/B000/hook-SECRET"
SMS_TOKEN = "sms-token-SECRET"


class Platform:
    """The platform's health endpoint, switchable between healthy and failing."""

    def __init__(self):
        self.healthy = True
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                ok = platform.healthy
                body = json.dumps({"status": "healthy" if ok else "down"}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/health"


@pytest.fixture
def world(monkeypatch, tmp_path, fresh_db):
    platform = Platform()
    with SmtpSink() as smtp, HttpReceiver() as hook, HttpReceiver(status=201) as sms:
        ops = fresh_db("_ops")
        env = {"BVH_OPS_STATE_DIR": str(tmp_path / "state"), **CALM_HOST,
               "BVH_OPS_OPS_DATABASE_URL": ops,
               "BVH_OPS_ENDPOINTS": json.dumps([{"name": "api-health", "service": "api", "url": platform.url,
                                                 "conditions": ["[STATUS] == 200"], "timeout_seconds": 2}]),
               "BVH_OPS_ALERTING": json.dumps({
                   "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_starttls": False,
                   "email_from": "bvh-ops@example.com", "email_to": ["oncall@example.com"],
                   "sms_gateway_url": sms.url, "sms_account_sid": "AC123", "sms_auth_token": SMS_TOKEN,
                   "sms_from": "+15550000", "sms_to": ["+15551111"],
                   "webhook_url": f"{hook.url}/services/{HOOK_TOKEN}", "webhook_format": "slack",
                   "timeout_seconds": 3,
                   # the daily summary is not owed during the test (its own tests cover it)
                   "digest_at": (datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M")})}
        monkeypatch.delenv("BVH_OPS_CONFIG", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield platform, smtp, hook, sms, ops, env
        platform.server.shutdown()


class Clock:
    """Starts at the real time, or, in an hour's last 30 minutes, at minute 2 of the next hour:
    warnings go out in an hourly batch, and a test that crossed the hour (its cycles and jumps
    span up to ~15 minutes) got that batch too."""

    def __init__(self, now: datetime | None = None):
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        self.at = now if now.minute < 30 else (now + timedelta(hours=1)).replace(minute=2, second=0)

    def __call__(self):
        return self.at


def cycles(runtime, settings, clock, n):
    out = []
    for _ in range(n):
        out.append(runtime.after_cycle(run_cycle(settings, clock.at)))
        clock.at += timedelta(seconds=30)
    return out


def drain(q):
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


def test_fault_to_critical_everywhere_restart_without_duplicates_then_resolved(world):
    platform, smtp, hook, sms, ops, env = world
    settings = load_settings()
    clock = Clock()
    runtime = AlertingRuntime.start(settings, lambda: ops, clock=clock, now=clock.at)
    try:
        cycles(runtime, settings, clock, 2)          # healthy
        platform.healthy = False
        fault_at = clock.at
        cycles(runtime, settings, clock, 2)          # two bad samples: "system down" fires
        wait_until(lambda: smtp.mail.qsize() >= 1 and hook.got.qsize() >= 1 and sms.got.qsize() >= 1, "the critical on every channel")

        def recorded() -> list[tuple]:
            """A delivery is recorded as sent once its channel's send has returned: just after
            the receiver has it (a CI run read the table between the two)."""
            with psycopg.connect(ops) as conn:
                rows = conn.execute("SELECT channel, sent_at FROM ops.notifications WHERE kind = 'fired' "
                                    "AND status = 'sent'").fetchall()
            return rows if len(rows) >= 3 else []

        sent = wait_until(recorded, "the three deliveries recorded as sent")
        assert {c for c, _ in sent} == {"email", "sms", "webhook"}
        assert all(at - fault_at <= timedelta(minutes=2) for _, at in sent)   # fault -> delivered
        # The second AlertingRuntime may not evaluate while this one runs (one evaluator).
        assert AlertingRuntime.start(settings, lambda: ops, clock=clock) is None
        cycles(runtime, settings, clock, 3)          # still down: nothing new
    finally:
        runtime.stop()                                # the monitor stops mid-incident
    mail = smtp.mail.get_nowait()
    assert "[CRITICAL FIRING] system down" in mail.subject and "api-health" in mail.text()
    (post,) = drain(hook.got)
    assert post.path == f"/services/{HOOK_TOKEN}" and "system down" in json.loads(post.body)["text"]
    (text,) = drain(sms.got)
    assert b"CRITICAL+FIRING" in text.body or b"CRITICAL%20FIRING" in text.body

    listed = run_cli("alerts", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (alert,) = [a for a in json.loads(listed.stdout) if a["name"] == "system down"]
    assert alert["state"] == "firing" and alert["severity"] == "critical" and not alert["acknowledged"]
    acked = run_cli("alerts", "ack", alert["fingerprint"][:8], env=env)
    assert acked.returncode == 0 and "acknowledged" in acked.stdout, acked.stderr

    platform.healthy = True                           # recovers while no monitor runs
    clock.at += timedelta(minutes=10)
    runtime = AlertingRuntime.start(settings, lambda: ops, clock=clock, now=clock.at)
    try:
        cycles(runtime, settings, clock, 3)
        wait_until(lambda: smtp.mail.qsize() >= 1 and hook.got.qsize() >= 1, "the resolved notice")
    finally:
        runtime.stop()
    mails = drain(smtp.mail)
    assert [m.subject.split("]")[0] for m in mails] == ["[CRITICAL RESOLVED"]   # no second "fired"
    assert len(drain(hook.got)) == 1

    report = run_cli("report", "incidents", "--json", env=env)
    assert report.returncode == 0, report.stderr
    (incident,) = json.loads(report.stdout)["incidents"]
    assert incident["name"] == "system down" and incident["ended_at"] is not None
    assert incident["notifications_sent"] == 6                 # fired + resolved on 3 channels
    assert incident["duration_seconds"] == pytest.approx((clock.at - fault_at).total_seconds() - 30 * 3 - 30,
                                                         abs=600)
    after = json.loads(run_cli("alerts", "list", "--json", "--resolved", env=env).stdout)
    assert [a["state"] for a in after if a["name"] == "system down"] == ["resolved"]
    for body in (listed.stdout, report.stdout):
        assert HOOK_TOKEN not in body and SMS_TOKEN not in body


def test_a_failing_channel_is_retried_and_escalated_to_the_others(world):
    platform, smtp, hook, sms, ops, env = world
    hook.status = 500                                  # the webhook receiver is broken
    settings = load_settings()
    clock = Clock()
    runtime = AlertingRuntime.start(settings, lambda: ops, clock=clock, now=clock.at)
    try:
        platform.healthy = False
        cycles(runtime, settings, clock, 2)
        wait_until(lambda: smtp.mail.qsize() >= 1 and hook.got.qsize() >= 1, "first attempts")
        for _ in range(8):                             # 4 minutes of cycles: retries with backoff
            cycles(runtime, settings, clock, 1)
            wait_until(lambda: not runtime.alerter.pending("webhook", clock.at - timedelta(seconds=30)), "retry attempted")
        wait_until(lambda: any("notification channel failing" in m.subject for m in list(smtp.mail.queue)), "the escalation on email")
    finally:
        runtime.stop(drain_seconds=0)
    attempts = drain(hook.got)
    assert 3 <= len(attempts) < 10                     # retried, with backoff (not once per cycle)
    escalations = [m for m in drain(smtp.mail) if "notification channel failing" in m.subject]
    assert len(escalations) == 1 and "alerting.channel:webhook" in escalations[0].subject
    assert HOOK_TOKEN not in escalations[0].text()     # the error names the channel, not its URL
    with psycopg.connect(ops) as conn:
        status, error = conn.execute("SELECT status, last_error FROM ops.notifications WHERE channel = 'webhook' "
                                     "AND kind = 'fired' ORDER BY created_at LIMIT 1").fetchone()
    assert status == "pending" and "HTTP 500" in error and HOOK_TOKEN not in error


def test_silence_via_the_cli_mutes_then_the_resolved_notice_still_goes(world):
    platform, smtp, hook, sms, ops, env = world
    done = run_cli("alerts", "silence", "service=api", "--for", "1h", "--comment", "planned deploy", env=env)
    assert done.returncode == 0 and "planned deploy" in done.stdout, done.stderr
    settings = load_settings()
    clock = Clock()
    runtime = AlertingRuntime.start(settings, lambda: ops, clock=clock, now=clock.at)
    try:
        cycles(runtime, settings, clock, 1)            # reads the silences
        platform.healthy = False
        cycles(runtime, settings, clock, 4)
        listed = json.loads(run_cli("alerts", "list", "--json", env=env).stdout)
        assert [(a["state"], a["silenced"]) for a in listed if a["name"] == "system down"] == [("firing", True)]
        platform.healthy = True
        cycles(runtime, settings, clock, 2)
        wait_until(lambda: smtp.mail.qsize() >= 1, "the resolved notice")
    finally:
        runtime.stop()
    assert [m.subject.split("]")[0] for m in drain(smtp.mail)] == ["[CRITICAL RESOLVED"]


def test_bad_matcher_and_unconfigured_channel_are_one_line_errors(world):
    *_, env = world
    from tests.integration.cli import assert_one_line_error

    assert_one_line_error(run_cli("alerts", "silence", "bogus", "--for", "1h", "--comment", "x", env=env),
                          "matcher 'bogus'")
    assert_one_line_error(run_cli("alerts", "silence", "service=api", "--for", "soon", "--comment", "x", env=env),
                          "--for 'soon'")
    no_sms = {**env, "BVH_OPS_ALERTING": json.dumps({"webhook_url": "http://127.0.0.1:9/x"})}
    assert_one_line_error(run_cli("alerts", "test", "--channel", "sms", env=no_sms), "channel sms is not configured")


def test_alerts_test_reports_success_and_the_channels_error(world):
    platform, smtp, hook, sms, ops, env = world
    ok = run_cli("alerts", "test", "--channel", "email", env=env)
    assert ok.returncode == 0 and "accepted" in ok.stdout, ok.stderr
    assert "[TEST]" in smtp.mail.get(timeout=5).subject
    hook.status = 500
    bad = run_cli("alerts", "test", "--channel", "webhook", "--json", env=env)
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)
    assert doc == {"channel": "webhook", "delivered": False, "error": doc["error"]} and "HTTP 500" in doc["error"]
    assert HOOK_TOKEN not in bad.stdout + bad.stderr


def test_findings_reported_by_other_procedures_alert_and_clear(world):
    from bvh_ops.alerting.findings import Finding, report_findings
    from bvh_ops.alerting.rules import Severity

    platform, smtp, hook, sms, ops, env = world
    settings = load_settings()
    clock = Clock()
    runtime = AlertingRuntime.start(settings, lambda: ops, clock=clock, now=clock.at)
    try:
        cycles(runtime, settings, clock, 1)
        with psycopg.connect(ops, autocommit=True) as conn:   # e.g. the security scan's run
            counts = report_findings(conn, "security", [
                Finding("hba.trust", Severity.CRITICAL, "pg_hba allows trust from any address", "line 3"),
                Finding("ssl.off", Severity.WARNING, "ssl is off")], clock.at)
        assert counts == {"active": 2, "new": 2, "cleared": 0}
        cycles(runtime, settings, clock, 1)
        wait_until(lambda: smtp.mail.qsize() >= 1, "the critical finding by email")
        with psycopg.connect(ops, autocommit=True) as conn:   # the next scan: trust is fixed
            assert report_findings(conn, "security", [Finding("ssl.off", Severity.WARNING, "ssl is off")],
                                   clock.at)["cleared"] == 1
        cycles(runtime, settings, clock, 1)
        wait_until(lambda: smtp.mail.qsize() >= 2, "the resolved notice")
    finally:
        runtime.stop()
    subjects = [m.subject for m in drain(smtp.mail)]
    assert subjects == ["[CRITICAL FIRING] pg_hba allows trust from any address: security (finding:security:hba.trust)",
                        "[CRITICAL RESOLVED] pg_hba allows trust from any address: security "
                        "(finding:security:hba.trust)"]
    firing = {s.alert.name for s in runtime.alerter.states.values() if s.phase == "firing"}
    assert "ssl is off" in firing                      # the warning waits for the hourly batch


def test_alerts_go_out_while_the_ops_database_is_down_and_are_written_when_it_returns(world, monkeypatch):
    from bvh_ops.alerting.store import Persistence

    platform, smtp, hook, sms, ops, env = world
    monkeypatch.setattr(Persistence, "RECONNECT_SECONDS", 0.0)
    where = ["postgresql://bvh:pw-SECRET@127.0.0.1:1/nowhere"]      # nothing listens there
    settings = load_settings()
    clock = Clock()
    runtime = AlertingRuntime.start(settings, lambda: where[0], clock=clock, now=clock.at)
    try:
        platform.healthy = False
        out = cycles(runtime, settings, clock, 2)
        assert out[-1].problem and "pw-SECRET" not in out[-1].problem
        wait_until(lambda: smtp.mail.qsize() >= 1, "the critical, without the ops database")
        where[0] = ops                                             # it is back
        out = cycles(runtime, settings, clock, 1)
        assert out[-1].problem is None
    finally:
        runtime.stop()
    with psycopg.connect(ops) as conn:
        phase = conn.execute("SELECT phase FROM ops.alert_states WHERE name = 'system down'").fetchone()
        sent = conn.execute("SELECT count(*) FROM ops.notifications WHERE kind = 'fired' AND status = 'sent'"
                            ).fetchone()[0]
        incidents = conn.execute("SELECT count(*) FROM ops.incidents WHERE ended_at IS NULL").fetchone()[0]
    assert phase == ("firing",) and sent == 3 and incidents == 1
