"""Alert channels against real servers on 127.0.0.1: an SMTP server (aiosmtpd), and an HTTP
receiver standing in for Slack/Discord/generic webhooks and a Twilio-shaped SMS gateway."""

from __future__ import annotations

import base64
import json
import queue
import socket
import threading
import time
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from bvh_ops.alerting.channels.base import ChannelError
from bvh_ops.alerting.channels.email import EmailChannel
from bvh_ops.alerting.channels.registry import channels_from
from bvh_ops.alerting.channels.sms import SmsChannel
from bvh_ops.alerting.channels.webhook import WebhookChannel
from bvh_ops.alerting.routing import Message
from bvh_ops.alerting.rules import Severity, fingerprint
from bvh_ops.alerting.state import Alert
from bvh_ops.config import AlertingSettings

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

ALERT = Alert(fingerprint("system down", "api", "api-health"), "system down", Severity.CRITICAL, "api", "api-health",
              detail="GET /api/health: connection refused")
CRITICAL = Message("email:fired:x", "email", Severity.CRITICAL, "fired",
                   "[CRITICAL FIRING] system down: api (api-health)",
                   ("FIRING since 2026-01-05T10:00:00+00:00: system down on api", "<b>not html</b>"), (ALERT,))
TOKEN = "tok-SECRET-123"


class _Sink:
    def __init__(self):
        self.mail = queue.Queue()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.mail.put((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server():
    sink = _Sink()
    with socket.socket() as s:  # aiosmtpd 1.4 cannot bind port 0 (its start-up probe connects to the port)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = aiosmtpd_controller.Controller(sink, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    try:
        yield port, sink.mail
    finally:
        controller.stop()


@pytest.fixture
def http_receiver():
    """Records (path, headers, body) of every POST; answers with ``status[0]``."""
    got, status = queue.Queue(), [200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.put((self.path, dict(self.headers), body))
            self.send_response(status[0])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", got, status
    finally:
        server.shutdown()
        server.server_close()


def test_critical_email_arrives_as_text_and_html(smtp_server):
    port, mail = smtp_server
    EmailChannel("127.0.0.1", port, "ops@example.com", ("a@example.com", "b@example.com"), starttls=False,
                 timeout=5).send(CRITICAL)
    sender, rcpts, raw = mail.get(timeout=5)
    msg = message_from_bytes(raw, policy=default_policy)
    assert sender == "ops@example.com" and rcpts == ["a@example.com", "b@example.com"]
    assert msg["Subject"] == CRITICAL.subject
    assert "system down on api" in msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "system down on api" in html and "&lt;b&gt;not html&lt;/b&gt;" in html


def test_refused_smtp_raises_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    with pytest.raises(ChannelError, match=f"email: SMTP 127.0.0.1:{port} failed"):
        EmailChannel("127.0.0.1", port, "ops@example.com", ("a@example.com",), starttls=False,
                     password="pw-SECRET", username="u", timeout=2).send(CRITICAL)


def test_silent_smtp_server_raises_within_its_timeout():
    # Listening but never greeting: the kernel completes the connect, no banner ever comes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        started = time.monotonic()
        with pytest.raises(ChannelError, match="timed out|Timeout") as err:
            EmailChannel("127.0.0.1", s.getsockname()[1], "ops@example.com", ("a@example.com",), starttls=False,
                         username="u", password="pw-SECRET", timeout=1).send(CRITICAL)
        assert time.monotonic() - started < 3
        assert "pw-SECRET" not in str(err.value)


@pytest.mark.parametrize("fmt, check", [
    ("slack", lambda body: "system down" in body["text"] and set(body) == {"text"}),
    ("discord", lambda body: "system down" in body["content"] and set(body) == {"content"}),
    ("json", lambda body: body["severity"] == "critical" and body["alerts"][0]["fingerprint"] == ALERT.fingerprint),
])
def test_critical_webhook_arrives_in_its_format(http_receiver, fmt, check):
    base, got, _ = http_receiver
    WebhookChannel(f"{base}/hooks/{TOKEN}", fmt, timeout=5).send(CRITICAL)
    path, headers, body = got.get(timeout=5)
    assert path == f"/hooks/{TOKEN}" and headers["Content-Type"] == "application/json"
    assert check(json.loads(body))


def test_webhook_error_does_not_quote_its_url(http_receiver):
    base, _, status = http_receiver
    status[0] = 500
    with pytest.raises(ChannelError, match="HTTP 500") as err:
        WebhookChannel(f"{base}/hooks/{TOKEN}", "slack", timeout=5).send(CRITICAL)
    assert TOKEN not in str(err.value)


def test_critical_sms_arrives_in_twilio_shape(http_receiver):
    base, got, _ = http_receiver
    SmsChannel(base, "AC123", TOKEN, "+15550001", ("+15550002", "+15550003"), timeout=5).send(CRITICAL)
    for to in ("+15550002", "+15550003"):
        path, headers, body = got.get(timeout=5)
        assert path == "/2010-04-01/Accounts/AC123/Messages.json"
        assert headers["Authorization"] == "Basic " + base64.b64encode(f"AC123:{TOKEN}".encode()).decode()
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert parse_qs(body.decode()) == {"From": ["+15550001"], "To": [to], "Body": [CRITICAL.subject]}


def test_gateway_500_raises_without_the_token(http_receiver):
    base, _, status = http_receiver
    status[0] = 500
    with pytest.raises(ChannelError, match="sms: gateway answered HTTP 500") as err:
        SmsChannel(base, "AC123", TOKEN, "+15550001", ("+15550002",), timeout=5).send(CRITICAL)
    assert TOKEN not in str(err.value)


def test_registry_builds_the_configured_channels(smtp_server, http_receiver):
    port, mail = smtp_server
    base, got, _ = http_receiver
    cfg = AlertingSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False, email_from="ops@example.com",
                           email_to=["a@example.com"], sms_gateway_url=base, sms_account_sid="AC1",
                           sms_auth_token=TOKEN, sms_from="+1", sms_to=["+2"], webhook_url=f"{base}/hook",
                           webhook_format="discord", timeout_seconds=5)
    channels = channels_from(cfg)
    assert [c.name for c in channels] == ["email", "sms", "webhook"]
    assert all(TOKEN not in repr(c) for c in channels)
    for c in channels:
        c.send(CRITICAL)
    assert mail.get(timeout=5)[1] == ["a@example.com"]
    assert {got.get(timeout=5)[0] for _ in range(2)} == {"/2010-04-01/Accounts/AC1/Messages.json", "/hook"}
    assert channels_from(AlertingSettings()) == []
