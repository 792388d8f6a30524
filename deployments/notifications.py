"""Failure notifications: one Prefect automation that sends a notification whenever a bvh-ops
flow run fails, crashes or times out, through a webhook block. Created idempotently: the block
is saved with overwrite, the automation is read by name and updated, so re-running never makes
a duplicate.

Email is not wired yet: Prefect's core notification blocks have no SMTP block the server can
load (prefect-email provides tasks, not a notification block); point the webhook at your
alerting gateway (Alertmanager, PagerDuty, Slack, an SMTP relay with an HTTP front)."""

from __future__ import annotations

from typing import Any

from bvh_ops.config import Settings
from bvh_ops.errors import ConfigError

AUTOMATION_NAME = "bvh-ops: flow run failed, crashed or timed out"
WEBHOOK_BLOCK = "bvh-ops-failure-webhook"
FLOWS = ["daily-backup", "incremental-backup", "dr-drill"]
EVENTS = ["prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"]
SUBJECT = "bvh-ops: {{ flow.name }} run {{ flow_run.name }} is {{ flow_run.state.name }}"
BODY = ("Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }}: "
        "{{ flow_run.state.message }}. Details: {{ flow_run|ui_url }}")


def _blocks(settings: Settings) -> list[Any]:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    ids = []
    if settings.notify_webhook_url is not None:
        block = CustomWebhookNotificationBlock(
            name="bvh-ops", url=settings.notify_webhook_url.get_secret_value(), method="POST",
            json_data={"subject": "{{subject}}", "body": "{{body}}", "source": "bvh-ops"},
            # Operations webhooks usually live on the private network.
            allow_private_urls=True,
        )
        ids.append(block.save(WEBHOOK_BLOCK, overwrite=True))
    if not ids:
        raise ConfigError("no notification target: set notify_webhook_url (BVH_OPS_NOTIFY_WEBHOOK_URL)")
    return ids


def setup_notifications(settings: Settings) -> dict[str, Any]:
    """Create or update the blocks and the automation; returns what was done."""
    from prefect.automations import Automation
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    block_ids = _blocks(settings)
    trigger = EventTrigger(
        expect=set(EVENTS),
        match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOWS},
        posture=Posture.Reactive,
        threshold=1,
    )
    actions = [SendNotification(block_document_id=bid, subject=SUBJECT, body=BODY) for bid in block_ids]
    try:
        existing = Automation.read(name=AUTOMATION_NAME)
    except ValueError:
        existing = None
    if existing is None:
        Automation(name=AUTOMATION_NAME, description="Notify operators of failed bvh-ops runs",
                   trigger=trigger, actions=actions, enabled=True).create()
        return {"automation": AUTOMATION_NAME, "action": "created", "notifications": len(actions)}
    existing.trigger = trigger
    existing.actions = actions
    existing.enabled = True
    existing.update()
    return {"automation": AUTOMATION_NAME, "action": "updated", "notifications": len(actions)}
