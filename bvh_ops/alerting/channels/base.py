"""What every channel is: a name and ``send(message)``, which delivers or raises ChannelError."""

from __future__ import annotations

from typing import Protocol

from bvh_ops.alerting.routing import Message
from bvh_ops.errors import TransientError


class ChannelError(TransientError):
    """A channel could not deliver (refused, timed out, rejected). The message names the channel
    and the cause, never a secret (password, token, the webhook URL); retrying may help."""


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


def body_text(message: Message) -> str:
    return "\n".join((message.subject, "", *message.lines)) + "\n"
