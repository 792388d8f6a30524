"""What is due to whom, and when (pure, ``now`` passed in) — the runbook's section 4:

- critical: one message per event per channel, at once (fired, and resolved when it clears);
- warning: one message per channel per closed UTC hour, listing every warning that fired or was
  still firing in that hour; none when there were none;
- info: one daily digest per channel at ``digest_at`` (default 07:00 UTC) over the 24 hours
  before it.

``events`` is the event journal (every fired/resolved event at least since the oldest firing
alert, or a day back, whichever is older); ``log`` holds the keys of messages already sent, so
calling ``due`` again — after a restart too — returns only what is still owed. Silenced or
inhibited fired alerts are not notified; a resolved notice is sent even when silenced (the
operator hears that it cleared), but not when inhibited (its fired notice never went out).

The digest can carry more than info alerts: the caller gathers the day's summary (backups, drills,
incidents, uptime, business figures: ``bvh_ops.alerting.digest``) and passes its lines as
``digest_lines``. Gathering costs queries, so ``digest_window`` and ``digest_key`` let the caller
ask first whether the digest is owed at all (its key not in the log yet).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from bvh_ops.alerting.rules import Severity
from bvh_ops.alerting.state import Alert, Event

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
DEFAULT_DIGEST_AT = time(7, 0)
# Closed hours looked back over for owed warning batches (a monitor down longer loses them).
BATCH_LOOKBACK_HOURS = 24
# A digest is still owed this long after its time (a monitor restarted at 09:00 sends the 07:00
# digest; one first started in the afternoon does not send a summary of a day it never watched).
DIGEST_CATCHUP = timedelta(hours=6)


@dataclass(frozen=True)
class Message:
    key: str                  # unique per channel and content: the notification log's key
    channel: str              # "email" | "sms" | "webhook" | any registered name
    severity: Severity
    kind: str                 # "fired" | "resolved" | "batch" | "digest"
    subject: str              # one line (SMS sends only this)
    lines: tuple[str, ...]    # the body, one alert per line
    alerts: tuple[Alert, ...] = ()


@dataclass(frozen=True)
class Episode:
    alert: Alert
    fired: Event
    resolved: Event | None

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.fired.at < end and (self.resolved is None or self.resolved.at >= start)


def due(log: Collection[str], events: Sequence[Event], now: datetime, *, channels: Sequence[str],
        digest_at: time = DEFAULT_DIGEST_AT, digest_lines: Sequence[str] | None = None) -> list[Message]:
    """Every message owed at ``now`` that ``log`` does not hold yet, oldest first. With
    ``digest_lines`` the digest's body is those lines, then an "Info alerts" section."""
    out: list[Message] = []
    for ev in sorted(events, key=lambda e: e.at):
        if ev.alert.severity is Severity.CRITICAL and ev.at <= now and _notify(ev):
            for ch in channels:
                out.append(_critical(ev, ch))
    episodes = _episodes(events)
    out += _batches(episodes, now, channels)
    out += _digest(episodes, now, channels, digest_at, digest_lines)
    return [m for m in out if m.key not in log]


def _notify(ev: Event) -> bool:
    if ev.inhibited:
        return False
    return ev.kind == "resolved" or not ev.silenced


def _critical(ev: Event, channel: str) -> Message:
    a = ev.alert
    verb = "FIRING" if ev.kind == "fired" else "RESOLVED"
    subject = f"[CRITICAL {verb}] {a.name}: {a.service} ({a.check})"
    lines = (f"{verb} since {ev.at.isoformat()}: {a.name} on {a.service}, check {a.check}",
             *([a.detail] if a.detail else ()))
    return Message(f"{channel}:{ev.kind}:{a.fingerprint}:{ev.at.isoformat()}", channel, Severity.CRITICAL,
                   ev.kind, subject, lines, (a,))


def _episodes(events: Sequence[Event]) -> list[Episode]:
    """Pairs each fired event with the next resolved event of the same fingerprint."""
    open_: dict[str, Event] = {}
    done: list[Episode] = []
    for ev in sorted(events, key=lambda e: e.at):
        fp = ev.alert.fingerprint
        if ev.kind == "fired":
            open_[fp] = ev
        elif fp in open_:
            done.append(Episode(ev.alert, open_.pop(fp), ev))
    done += [Episode(ev.alert, ev, None) for ev in open_.values()]
    return sorted(done, key=lambda e: e.fired.at)


def _line(ep: Episode) -> str:
    a = ep.alert
    end = f", resolved {ep.resolved.at:%H:%M}" if ep.resolved else ", still firing"
    return f"{a.name}: {a.service} ({a.check}) since {ep.fired.at:%Y-%m-%d %H:%M}{end}"


def _batches(episodes: list[Episode], now: datetime, channels: Sequence[str]) -> list[Message]:
    warnings = [e for e in episodes if e.alert.severity is Severity.WARNING and _notify(e.fired)]
    if not warnings:
        return []
    hour_end = now.replace(minute=0, second=0, microsecond=0)
    out = []
    for back in range(BATCH_LOOKBACK_HOURS, 0, -1):
        end = hour_end - (back - 1) * HOUR
        start = end - HOUR
        inside = [e for e in warnings if e.overlaps(start, end)]
        if not inside:
            continue
        subject = f"[WARNING] {len(inside)} warning(s) {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
        for ch in channels:
            out.append(Message(f"{ch}:batch:{start.isoformat()}", ch, Severity.WARNING, "batch", subject,
                               tuple(_line(e) for e in inside), tuple(e.alert for e in inside)))
    return out


def digest_window(now: datetime, at: time = DEFAULT_DIGEST_AT) -> tuple[datetime, datetime]:
    """[start, end) of the digest due at ``now``: the 24 hours before the latest ``at`` <= ``now``."""
    end = datetime.combine(now.date(), at, tzinfo=now.tzinfo)
    if end > now:
        end -= DAY
    return end - DAY, end


def digest_key(channel: str, end: datetime) -> str:
    """The notification-log key of the digest of the window ending at ``end`` on ``channel``."""
    return f"{channel}:digest:{end.date().isoformat()}"


def _digest(episodes: list[Episode], now: datetime, channels: Sequence[str], at: time,
            digest_lines: Sequence[str] | None = None) -> list[Message]:
    start, end = digest_window(now, at)
    if now - end > DIGEST_CATCHUP:
        return []
    infos = [e for e in episodes if e.alert.severity is Severity.INFO and _notify(e.fired)
             and e.overlaps(start, end)]
    info_lines = tuple(_line(e) for e in infos) or ("no info alerts",)
    if digest_lines is None:
        lines = info_lines
    else:
        lines = (*digest_lines, "Info alerts", *(f"  {line}" for line in info_lines))
    subject = f"[INFO] daily summary {start:%Y-%m-%d %H:%M} - {end:%Y-%m-%d %H:%M} UTC"
    return [Message(digest_key(ch, end), ch, Severity.INFO, "digest", subject, lines,
                    tuple(e.alert for e in infos)) for ch in channels]
