"""The one module that knows every channel: ``[alerting]`` settings -> the configured channels."""

from __future__ import annotations

from bvh_ops.alerting.channels.base import Channel
from bvh_ops.alerting.channels.email import EmailChannel
from bvh_ops.alerting.channels.sms import SmsChannel
from bvh_ops.alerting.channels.webhook import WebhookChannel
from bvh_ops.config import AlertingSettings


def channels_from(cfg: AlertingSettings) -> list[Channel]:
    """Every channel whose settings are present (the config validated that they are complete)."""
    out: list[Channel] = []
    if cfg.smtp_host:
        out.append(EmailChannel(
            cfg.smtp_host, cfg.smtp_port, cfg.email_from or "", tuple(cfg.email_to), cfg.smtp_starttls,
            cfg.smtp_username, cfg.smtp_password.get_secret_value() if cfg.smtp_password else None,
            cfg.timeout_seconds))
    if cfg.sms_gateway_url and cfg.sms_auth_token is not None:
        out.append(SmsChannel(cfg.sms_gateway_url, cfg.sms_account_sid or "", cfg.sms_auth_token.get_secret_value(),
                              cfg.sms_from or "", tuple(cfg.sms_to), cfg.timeout_seconds))
    if cfg.webhook_url is not None:
        out.append(WebhookChannel(cfg.webhook_url.get_secret_value(), cfg.webhook_format, cfg.timeout_seconds))
    return out
