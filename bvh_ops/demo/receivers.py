"""Real receivers on 127.0.0.1 for the demo (and the tests): an SMTP sink (aiosmtpd) that keeps
every mail, and an HTTP receiver that keeps every POST (a Slack/Discord webhook or a
Twilio-shaped SMS gateway stand-in) and answers with a status the caller can change."""

from __future__ import annotations

import queue
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """An SMTP server on 127.0.0.1 (no TLS, no auth): ``mail`` is a queue of ``Mail``."""

    def __init__(self) -> None:
        self.mail: queue.Queue[Mail] = queue.Queue()
        self.port = 0
        self._controller = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = message_from_bytes(envelope.content, policy=default_policy)
        self.mail.put(Mail(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def __enter__(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        # aiosmtpd cannot bind port 0 (its start-up probe connects to the port): pick one first.
        self.port = _free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=10)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._controller is not None:
            self._controller.stop()


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """An HTTP server on 127.0.0.1 recording every POST into ``got``; answers ``status``."""

    status: int = 200
    got: queue.Queue[Request] = field(default_factory=queue.Queue)
    url: str = ""

    def __enter__(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.got.put(Request(self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
