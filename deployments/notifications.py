"""The monitor's own dead-man: Prefect automations that notify through a webhook block when the
``monitoring`` flow stops, a path that does not depend on the monitor being alive.

- *bvh-ops: monitoring silent* (proactive): no ``monitoring`` run has ended (Completed, or Failed:
  it fails on purpose while a service is critical, and then it is alive and reporting) within
  ``[alerting] monitoring_silence_minutes`` (default 2 h; runs last 59 min, one an hour). The
  Prefect server evaluates it by itself, so it fires when the monitor's process, host or worker
  is gone, and again every such period while it stays silent.
- *bvh-ops: monitoring run failed, crashed or timed out* (reactive): a failing monitor cannot
  report itself.

Every other deployment's failed, crashed or timed-out runs, and its scheduled runs that did not
happen, are alerts of the monitor itself (``run:*`` and ``deadman:*`` checks of
bvh_ops.monitoring.schedules, routed by the alerting rules like any other critical alert), so
one alerting configuration sends everything. The automation that used to notify those failures
directly is removed here.

Created idempotently: the block is saved with overwrite, each automation is read by name and
updated, so re-running never makes a duplicate. Email is not wired into these two: Prefect's
core notification blocks have no SMTP block the server can load; point the webhook at your
alerting gateway (Alertmanager, PagerDuty, Slack, an SMTP relay with an HTTP front)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bvh_ops.config import Settings
from bvh_ops.errors import ConfigError

SILENT_AUTOMATION = "bvh-ops: monitoring silent"
FAILED_AUTOMATION = "bvh-ops: monitoring run failed, crashed or timed out"
# Replaced by the alert routing (issue #12): deleted where an older setup created it.
LEGACY_AUTOMATIONS = ("bvh-ops: flow run failed, crashed or timed out",)
WEBHOOK_BLOCK = "bvh-ops-failure-webhook"
MONITOR_FLOW = "monitoring"
# A monitoring run that ends, passing or failing on purpose (monitoring.hour fails the run while a
# service is critical), proves the monitor alive; Crashed, TimedOut or no end at all do not.
ALIVE = ["prefect.flow-run.Completed", "prefect.flow-run.Failed"]
EVENTS = ["prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"]
SUBJECT = "bvh-ops: {{ flow.name }} run {{ flow_run.name }} is {{ flow_run.state.name }}"
BODY = ("Flow run {{ flow_run.name }} of {{ flow.name }} entered {{ flow_run.state.name }}: "
        "{{ flow_run.state.message }}. The monitor cannot raise its own alerts while it fails. "
        "Details: {{ flow_run|ui_url }}")
SILENT_SUBJECT = "bvh-ops: the monitor is silent"
SILENT_BODY = ("No run of the monitoring flow has ended in the last {minutes} minutes: the monitor (its "
               "worker, host or deployment) is down or stuck, so no other bvh-ops alert can reach you. "
               "Check the 'monitoring' deployment's runs and the bvh-ops work pool.")


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


def _monitor() -> dict[str, Any]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": MONITOR_FLOW}


def silent_trigger(within: timedelta) -> Any:
    """Fires when no monitoring run ends (Completed or Failed) within ``within``."""
    from prefect.events.schemas.automations import EventTrigger, Posture

    return EventTrigger(expect=set(ALIVE), match_related=_monitor(), posture=Posture.Proactive, threshold=1,
                        within=within)


def failed_trigger() -> Any:
    from prefect.events.schemas.automations import EventTrigger, Posture

    return EventTrigger(expect=set(EVENTS), match_related=_monitor(), posture=Posture.Reactive, threshold=1)


def _upsert(name: str, description: str, trigger: Any, actions: list[Any]) -> str:
    from prefect.automations import Automation

    try:
        existing = Automation.read(name=name)
    except ValueError:
        existing = None
    if existing is None:
        Automation(name=name, description=description, trigger=trigger, actions=actions, enabled=True).create()
        return "created"
    existing.description = description
    existing.trigger = trigger
    existing.actions = actions
    existing.enabled = True
    existing.update()
    return "updated"


def _remove_legacy() -> list[str]:
    from prefect.automations import Automation

    removed = []
    for name in LEGACY_AUTOMATIONS:
        try:
            Automation.read(name=name).delete()
        except ValueError:
            continue
        removed.append(name)
    return removed


def setup_notifications(settings: Settings, *, silence: timedelta | None = None) -> dict[str, Any]:
    """Create or update the block and both automations, delete the legacy one; returns what was
    done. ``silence`` overrides ``[alerting] monitoring_silence_minutes`` (tests, drills)."""
    from prefect.events.actions import SendNotification

    block_ids = _blocks(settings)
    within = silence or timedelta(minutes=settings.alerting.monitoring_silence_minutes)
    minutes = f"{within.total_seconds() / 60:g}"
    silent_actions = [SendNotification(block_document_id=bid, subject=SILENT_SUBJECT,
                                       body=SILENT_BODY.format(minutes=minutes)) for bid in block_ids]
    failed_actions = [SendNotification(block_document_id=bid, subject=SUBJECT, body=BODY) for bid in block_ids]
    done = {
        SILENT_AUTOMATION: _upsert(SILENT_AUTOMATION, f"The monitor's dead-man: no monitoring run ended in "
                                   f"{minutes} min", silent_trigger(within), silent_actions),
        FAILED_AUTOMATION: _upsert(FAILED_AUTOMATION, "Failures of the monitoring flow (it cannot report itself)",
                                   failed_trigger(), failed_actions),
    }
    return {"automations": done, "removed": _remove_legacy(), "notifications": len(block_ids)}
