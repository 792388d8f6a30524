"""Email over SMTP (smtplib): optional STARTTLS and login, plain text with an HTML alternative."""

from __future__ import annotations

import html
import smtplib
from dataclasses import dataclass, field
from email.message import EmailMessage

from bvh_ops.alerting.channels.base import ChannelError, body_text
from bvh_ops.alerting.routing import Message


@dataclass(frozen=True)
class EmailChannel:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    name: str = "email"

    def send(self, message: Message) -> None:
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail.set_content(body_text(message))
        items = "".join(f"<li>{html.escape(line)}</li>" for line in message.lines)
        mail.add_alternative(f"<html><body><h3>{html.escape(message.subject)}</h3><ul>{items}</ul></body></html>",
                             subtype="html")
        try:
            # The timeout covers the connect and every later socket operation.
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:  # OSError covers refused and timed out
            # smtplib's errors quote the server's reply, never our password.
            raise ChannelError(f"email: SMTP {self.host}:{self.port} failed: {type(exc).__name__}: {exc}") from None
