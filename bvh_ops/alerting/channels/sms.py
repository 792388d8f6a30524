"""SMS through an HTTP gateway with Twilio's REST shape: POST
{base}/2010-04-01/Accounts/{sid}/Messages.json, basic auth sid:token, form fields From/To/Body
(https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource).
One request per recipient; the subject line only (a text is short)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import httpx

from bvh_ops.alerting.channels.base import ChannelError
from bvh_ops.alerting.routing import Message
from bvh_ops.tls import default_context

# Twilio splits longer bodies into segments (and bills each); one segment is 160 GSM characters.
SMS_MAX = 160


@dataclass(frozen=True, eq=False)
class SmsChannel:
    base_url: str
    account_sid: str
    auth_token: str = field(repr=False)
    sender: str = ""
    recipients: tuple[str, ...] = ()
    timeout: float = 10.0
    name: str = "sms"

    @cached_property
    def _http(self) -> httpx.Client:
        """One client per channel: connections are kept alive across a burst."""
        return httpx.Client(verify=default_context())

    def send(self, message: Message) -> None:
        url = f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        for to in self.recipients:
            form = {"From": self.sender, "To": to, "Body": message.subject[:SMS_MAX]}
            try:
                resp = self._http.post(url, data=form, auth=(self.account_sid, self.auth_token), timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise ChannelError(f"sms: gateway request to {to} failed: {type(exc).__name__}") from None
            if resp.status_code >= 300:
                raise ChannelError(f"sms: gateway answered HTTP {resp.status_code} for {to}")
