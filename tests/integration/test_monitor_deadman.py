"""The monitor's own dead-man (deployments/notifications.py) on a real Prefect server (the
session's test harness): the automations as setup-notifications leaves them, and the proactive
one actually sending to a real HTTP receiver on 127.0.0.1 when no monitoring run completes."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bvh_ops.config import AlertingSettings, Settings
from deployments.notifications import (
    FAILED_AUTOMATION,
    LEGACY_AUTOMATIONS,
    SILENT_AUTOMATION,
    SILENT_SUBJECT,
    setup_notifications,
)
from tests.waiting import wait_until


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 recording the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def _delete_ours():
    from prefect.automations import Automation

    for name in (SILENT_AUTOMATION, FAILED_AUTOMATION):
        try:
            Automation.read(name=name).delete()
        except ValueError:
            pass


def test_setup_creates_the_proactive_dead_man_and_the_monitor_failure_automation(prefect_harness, receiver, tmp_path):
    from prefect.automations import Automation
    from prefect.events.schemas.automations import EventTrigger, Posture

    _, url = receiver
    settings = Settings(state_dir=tmp_path, notify_webhook_url=url,
                        alerting=AlertingSettings(monitoring_silence_minutes=90))
    legacy = Automation(name=LEGACY_AUTOMATIONS[0], trigger=EventTrigger(expect={"prefect.flow-run.Failed"}),
                        actions=[], enabled=True).create()
    try:
        first = setup_notifications(settings)
        second = setup_notifications(settings)
        assert first["automations"] == {SILENT_AUTOMATION: "created", FAILED_AUTOMATION: "created"}
        assert first["removed"] == [LEGACY_AUTOMATIONS[0]] and second["removed"] == []
        assert second["automations"] == {SILENT_AUTOMATION: "updated", FAILED_AUTOMATION: "updated"}

        silent = Automation.read(name=SILENT_AUTOMATION)
        trigger = silent.trigger
        assert trigger.posture == Posture.Proactive and trigger.expect == {"prefect.flow-run.Completed", "prefect.flow-run.Failed"}
        assert trigger.within == timedelta(minutes=90) and trigger.threshold == 1
        assert trigger.match_related.root == {"prefect.resource.role": "flow", "prefect.resource.name": "monitoring"}
        assert silent.enabled and len(silent.actions) == 1

        failed = Automation.read(name=FAILED_AUTOMATION).trigger
        assert failed.posture == Posture.Reactive
        assert failed.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}
        with pytest.raises(ValueError):
            Automation.read(id=legacy.id)
    finally:
        _delete_ours()


def test_the_silent_monitor_notifies_the_webhook(prefect_harness, receiver, tmp_path):
    """No monitoring run completes: the server's proactive evaluation (every 5 s) fires the
    automation once its window (the shortest Prefect allows, 10 s) passes empty."""
    received, url = receiver
    try:
        setup_notifications(Settings(state_dir=tmp_path, notify_webhook_url=url), silence=timedelta(seconds=10))
        body = wait_until(lambda: next((b for b in received if b.get("subject") == SILENT_SUBJECT), None),
                          "the proactive dead-man's notification at the webhook", timeout=90, interval=0.5)
        assert body["source"] == "bvh-ops" and "No run of the monitoring flow has ended" in body["body"]
    finally:
        _delete_ours()
