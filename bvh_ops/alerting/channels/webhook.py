"""Webhooks: Slack (``text``), Discord (``content``) or a generic JSON body, POSTed to a URL that
carries its token — so the URL never appears in an error."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import httpx

from bvh_ops.alerting.channels.base import ChannelError, body_text
from bvh_ops.alerting.routing import Message
from bvh_ops.tls import default_context

# Discord rejects content over 2,000 characters (https://discord.com/developers/docs/resources/message).
DISCORD_MAX = 2000


def payload(message: Message, fmt: str) -> dict[str, object]:
    text = body_text(message)
    if fmt == "slack":
        return {"text": text}
    if fmt == "discord":
        return {"content": text[:DISCORD_MAX]}
    return {"severity": str(message.severity), "kind": message.kind, "subject": message.subject,
            "lines": list(message.lines),
            "alerts": [{"fingerprint": a.fingerprint, "name": a.name, "service": a.service, "check": a.check}
                       for a in message.alerts]}


@dataclass(frozen=True, eq=False)
class WebhookChannel:
    url: str = field(repr=False)
    format: str = "slack"          # slack | discord | json
    timeout: float = 10.0
    name: str = "webhook"

    @cached_property
    def _http(self) -> httpx.Client:
        """One client per channel: connections are kept alive across a burst (a new client per
        message cost about 34 ms each, bench/bench_alerting.py)."""
        return httpx.Client(verify=default_context())

    def send(self, message: Message) -> None:
        try:
            resp = self._http.post(self.url, json=payload(message, self.format), timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ChannelError(f"webhook ({self.format}): request failed: {type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise ChannelError(f"webhook ({self.format}): HTTP {resp.status_code} from the receiver")
