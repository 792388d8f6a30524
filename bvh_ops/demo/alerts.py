"""The demo's alerting: real receivers on 127.0.0.1 (an SMTP sink, a Slack-format webhook
receiver), the AlertingRuntime fed by the demo's probe cycles, and what an operator would see: the
critical email and webhook as received, the resolved notice as received, then the hour's warning
batch and the day's digest rendered (not sent: they are owed at the hour's end and at digest_at)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

from bvh_ops.alerting import routing
from bvh_ops.alerting.channels.base import body_text
from bvh_ops.alerting.digest import gather_digest, render_digest
from bvh_ops.alerting.runtime import AlertingRuntime, CycleAlerts
from bvh_ops.config import Settings
from bvh_ops.demo.receivers import HttpReceiver, Mail, Request, SmtpSink
from bvh_ops.monitoring.cycle import CycleResult

HOOK_PATH = "/services/demo-hook"


class DemoAlerts:
    """Context manager: the receivers run inside it; ``start`` then starts the runtime."""

    def __init__(self, ops_dsn: str | None) -> None:
        self.ops_dsn = ops_dsn
        self.smtp = SmtpSink()
        self.hook = HttpReceiver()
        self.runtime: AlertingRuntime | None = None
        self.mails: list[Mail] = []          # everything the sink received, in order
        self.posts: list[Request] = []       # everything the webhook receiver received
        self.mark = (0, 0)                   # ``received`` looks only past these positions
        self._stack = ExitStack()

    def __enter__(self) -> DemoAlerts:
        self._stack.enter_context(self.smtp)
        self._stack.enter_context(self.hook)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.runtime is not None:
                self.runtime.stop(drain_seconds=2)
        finally:
            self._stack.close()

    def config(self, now: datetime) -> dict[str, object]:
        """The ``[alerting]`` table pointing at the receivers. The daily digest is set an hour
        ahead so it is not owed while the demo runs (the demo renders it instead)."""
        return {"smtp_host": "127.0.0.1", "smtp_port": self.smtp.port, "smtp_starttls": False,
                "email_from": "bvh-ops@localhost", "email_to": ["oncall@localhost"],
                "webhook_url": self.hook.url + HOOK_PATH, "webhook_format": "slack", "timeout_seconds": 3,
                "digest_at": (now + timedelta(hours=1)).strftime("%H:%M")}

    def start(self, settings: Settings) -> str:
        """Start the runtime (with the ops database when one runs); says where state is kept."""
        self.runtime = AlertingRuntime.start(settings, lambda: self.ops_dsn)
        if self.runtime is None:   # a `--keep-running` monitor of an earlier demo evaluates there
            self.ops_dsn = None
            self.runtime = AlertingRuntime.start(settings, lambda: None)
            return ("alert state in memory only: another monitor holds the ops database's evaluator lock "
                    "(bvh-ops demo --stop stops it)")
        problem = self.runtime.persistence.problem if self.runtime.persistence else None
        if self.ops_dsn is None or problem:
            return f"alert state in memory only (no ops database during this step{': ' + problem if problem else ''})"
        return "alert state written through to the ops database 'bvh_ops'"

    def feed(self, cycle: CycleResult) -> CycleAlerts | None:
        return self.runtime.after_cycle(cycle) if self.runtime is not None else None

    def _collect(self) -> None:
        while not self.smtp.mail.empty():
            self.mails.append(self.smtp.mail.get_nowait())
        while not self.hook.got.empty():
            self.posts.append(self.hook.got.get_nowait())

    def set_aside(self) -> None:
        """What was received so far (an earlier run's owed notices, delivered at start) is not
        what ``received`` looks for."""
        self._collect()
        self.mark = (len(self.mails), len(self.posts))

    def received(self, subject_part: str) -> tuple[Mail | None, Request | None]:
        """The first mail and webhook POST received since ``set_aside`` whose subject holds
        ``subject_part``."""
        self._collect()
        mail = next((m for m in self.mails[self.mark[0]:] if subject_part in m.subject), None)
        post = next((p for p in self.posts[self.mark[1]:] if subject_part.encode() in p.body), None)
        return mail, post

    def hour_batch(self, now: datetime) -> routing.Message | None:
        """The warning batch owed at the end of ``now``'s hour, as it stands (None: no warning)."""
        start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        with self.runtime.alerter.lock:
            events = list(self.runtime.alerter.events)
        owed = routing.due((), events, start + routing.HOUR, channels=["email"])
        return next((m for m in owed if m.kind == "batch" and m.key == f"email:batch:{start.isoformat()}"), None)

    def day_digest(self, settings: Settings, now: datetime) -> routing.Message:
        """The daily summary over the 24 hours up to ``now``, gathered and rendered as routing
        would send it (backups, drills, incidents, alerts, uptime, business figures)."""
        start = now - routing.DAY
        lines = render_digest(gather_digest(settings, start, now, ops_dsn=self.ops_dsn), start, now)
        with self.runtime.alerter.lock:
            events = list(self.runtime.alerter.events)
        owed = routing.due((), events, now, channels=["email"], digest_at=now.timetz().replace(tzinfo=None),
                           digest_lines=lines)
        return next(m for m in owed if m.kind == "digest")


def mail_lines(mail: Mail, body_lines: int = 4) -> list[str]:
    """Subject and the first lines of the body, as the on-call person's inbox shows them."""
    body = [line for line in mail.text().splitlines() if line.strip() and line != mail.subject]
    return [f"Subject: {mail.subject}", *body[:body_lines]]


def post_lines(post: Request) -> list[str]:
    try:
        doc = json.loads(post.body)
    except ValueError:
        return [f"POST {post.path}: {post.body[:300]!r}"]
    return [f"POST {post.path}", *json.dumps(doc, indent=2).splitlines()]


def message_lines(message: routing.Message) -> list[str]:
    return body_text(message).rstrip("\n").splitlines()
