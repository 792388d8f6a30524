"""``bvh-ops alerts list|silence|ack|test`` and ``bvh-ops report incidents``: the operator's side
of alerting. The state they read and write lives in the ops database (started for the call
when it is the embedded one and not running)."""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bvh_ops.cli.core import app, cli_settings, emit_json, out
from bvh_ops.cli.report import report_app
from bvh_ops.errors import ConfigError

alerts_app = typer.Typer(no_args_is_help=True, help="Alerts: list, silence, acknowledge, test a channel.")
app.add_typer(alerts_app, name="alerts")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_MATCHER_KEYS = {"name", "service", "check", "fingerprint"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``; at most 90 days (a silence is not a switch-off)."""
    parts = re.fullmatch(r"(?:\d+[smhdw])+", text.strip().lower())
    if not parts:
        raise ConfigError(f"--for '{text}': not a duration; use e.g. 30m, 2h, 1d or 1h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", text.lower()))
    if not 0 < seconds <= 90 * 86400:
        raise ConfigError(f"--for '{text}': must be more than 0 and at most 90 days")
    return timedelta(seconds=seconds)


def parse_matcher(text: str) -> dict[str, str]:
    """``service=api``, ``name='system down',check=api-*``, or a fingerprint (prefix, >= 6 hex)."""
    text = text.strip()
    if re.fullmatch(r"[0-9a-f]{6,16}", text):
        return {"fingerprint": text}
    found: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip().strip("'\"")
        if not sep or key not in _MATCHER_KEYS or not value:
            raise ConfigError(f"matcher '{text}': use key=glob pairs separated by commas (keys: "
                              f"{', '.join(sorted(_MATCHER_KEYS))}), e.g. service=api or name='high CPU'; "
                              "or a fingerprint from `bvh-ops alerts list`")
        found[key] = value
    if not found:
        raise ConfigError("matcher is empty: e.g. service=api, or a fingerprint from `bvh-ops alerts list`")
    return found


def _conn(settings):
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    class _Ctx:
        def __enter__(self):
            self._db = ops_database(settings)
            dsn = self._db.__enter__()
            self.conn = connect(dsn, autocommit=True)
            migrate(self.conn)
            return self.conn

        def __exit__(self, *exc):
            self.conn.close()
            return self._db.__exit__(*exc)

    return _Ctx()


def _console() -> Console:
    return out if out.is_terminal else Console(highlight=False, width=200)


@alerts_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print the alerts as JSON")] = False,
             resolved: Annotated[bool, typer.Option("--resolved", help="Include alerts resolved in the last "
                                                    "two days")] = False) -> None:
    """Pending and firing alerts (criticals first), marked silenced/acknowledged/inhibited."""
    from bvh_ops.alerting.store import list_alerts

    with _conn(cli_settings()) as conn:
        rows = list_alerts(conn, include_resolved=resolved)
    if as_json:
        emit_json([{k: r[k] for k in ("fingerprint", "name", "service", "check", "severity", "state", "since",
                                      "silenced", "acknowledged", "inhibited", "detail")} for r in rows])
        return
    if not rows:
        out.print("no pending or firing alerts", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("fingerprint", "severity", "state", "name", "service", "check", "since", "flags", "detail"):
        table.add_column(col, no_wrap=col != "detail")
    for r in rows:
        flags = ",".join(f for f in ("silenced", "acknowledged", "inhibited") if r[f]) or "-"
        table.add_row(r["fingerprint"], r["severity"], r["state"], r["name"], r["service"], r["check"],
                      r["since"][:19].replace("T", " "), flags, r["detail"])
    _console().print(table)


@alerts_app.command("silence")
def silence_cmd(matcher: Annotated[str, typer.Argument(help="key=glob[,key=glob] (name, service, check) or a "
                                                       "fingerprint")],
                duration: Annotated[str, typer.Option("--for", help="How long, e.g. 30m, 2h, 1d")],
                comment: Annotated[str, typer.Option("--comment", help="Why (kept with the silence)")],
                as_json: Annotated[bool, typer.Option("--json", help="Print the silence as JSON")] = False) -> None:
    """Mute notifications of matching alerts for a while. They still change state and show in
    `alerts list` and on the dashboard, marked silenced; a resolved notice is still sent; an
    alert still firing when the silence ends is notified then."""
    from bvh_ops.alerting.state import Silence
    from bvh_ops.alerting.store import add_silence
    from bvh_ops.audit.record import record

    fields = parse_matcher(matcher)
    span = parse_duration(duration)
    if not comment.strip():
        raise ConfigError("--comment is empty: say why (it is kept with the silence)")
    now = datetime.now(UTC)
    silence = Silence(until=now + span, name=fields.get("name", "*"), service=fields.get("service", "*"),
                      check=fields.get("check", "*"), comment=comment.strip(), fingerprint=fields.get("fingerprint"))
    settings = cli_settings()
    with _conn(settings) as conn:
        sid = add_silence(conn, silence, now, getpass.getuser())
        record(settings, None, "alert.silence", str(sid), {**fields, "until": silence.until.isoformat(),
                                                            "comment": silence.comment}, now=now, conn=conn)
    doc = {"id": sid, **fields, "until": silence.until.isoformat(), "comment": silence.comment}
    if as_json:
        emit_json(doc)
    else:
        what = ", ".join(f"{k}={v}" for k, v in fields.items())
        out.print(f"silence {sid}: {what} until {silence.until:%Y-%m-%d %H:%M:%S} UTC ({silence.comment})",
                  markup=False)


@alerts_app.command("ack")
def ack_cmd(fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint (a unique prefix will do)")],
            as_json: Annotated[bool, typer.Option("--json", help="Print the alert as JSON")] = False) -> None:
    """Acknowledge a pending or firing alert: someone is on it (shown in `alerts list` and on the
    dashboard until the alert resolves). Exit 1 when no active alert has that fingerprint."""
    from bvh_ops.alerting.store import acknowledge
    from bvh_ops.audit.record import record

    if not re.fullmatch(r"[0-9a-f]{4,16}", fingerprint):
        raise ConfigError(f"'{fingerprint}' is not a fingerprint: copy one from `bvh-ops alerts list`")
    settings = cli_settings()
    with _conn(settings) as conn:
        alert = acknowledge(conn, fingerprint, getpass.getuser(), datetime.now(UTC))
        if alert is not None:
            record(settings, None, "alert.ack", alert["fingerprint"], {"name": alert["name"]}, conn=conn)
    if alert is None:
        out.print(f"no single pending or firing alert has fingerprint {fingerprint} (see `bvh-ops alerts list`)",
                  markup=False)
        raise typer.Exit(1)
    if as_json:
        emit_json(alert)
    else:
        out.print(f"acknowledged {alert['fingerprint']}: {alert['name']} on {alert['service']}", markup=False)


@alerts_app.command("test")
def test_cmd(channel: Annotated[str, typer.Option("--channel", help="email, sms or webhook")],
             as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False) -> None:
    """Send a test message through one configured channel now; exit 0 when it was accepted, 1
    with the channel's error otherwise."""
    from bvh_ops.alerting.channels.base import ChannelError
    from bvh_ops.alerting.channels.registry import channels_from
    from bvh_ops.alerting.routing import Message
    from bvh_ops.alerting.rules import Severity

    settings = cli_settings()
    if channel not in ("email", "sms", "webhook"):
        raise ConfigError(f"--channel '{channel}': choose email, sms or webhook")
    chans = {c.name: c for c in channels_from(settings.alerting)}
    if channel not in chans:
        raise ConfigError(f"channel {channel} is not configured: set its fields under [alerting] in bvh-ops.toml "
                          "(README: Alerting)")
    now = datetime.now(UTC)
    message = Message(f"{channel}:test:{now.isoformat()}", channel, Severity.INFO, "test",
                      f"[TEST] bvh-ops alerting test via {channel}",
                      (f"A test message sent at {now:%Y-%m-%d %H:%M:%S} UTC by `bvh-ops alerts test`.",
                       "If you read this, this channel delivers bvh-ops alerts."))
    try:
        chans[channel].send(message)
        ok, error = True, None
    except ChannelError as exc:
        ok, error = False, str(exc)
    if as_json:
        emit_json({"channel": channel, "delivered": ok, "error": error})
    elif ok:
        out.print(f"{channel}: test message accepted", markup=False)
    else:
        out.print(f"{channel}: FAILED: {error}", markup=False)
    raise typer.Exit(0 if ok else 1)


@report_app.command("incidents")
def incidents_cmd(since: Annotated[str | None, typer.Option("--since", help="YYYY-MM-DD (UTC) or a duration "
                                                            "back, e.g. 7d; default 30d")] = None,
                  as_json: Annotated[bool, typer.Option("--json", help="Print the incidents as JSON")] = False) -> None:
    """Every critical alert episode since a date: start, end, duration, what fired, what resolved
    it, notifications sent; open incidents included."""
    from bvh_ops.alerting.render import duration
    from bvh_ops.alerting.store import incidents

    now = datetime.now(UTC)
    start = _since(since or "30d", now)
    with _conn(cli_settings()) as conn:
        rows = incidents(conn, start)
    if as_json:
        emit_json({"since": start.isoformat(), "incidents": rows})
        return
    if not rows:
        out.print(f"no incidents since {start:%Y-%m-%d %H:%M} UTC", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for col in ("started", "duration", "name", "service", "check", "sent", "fired", "resolved by"):
        table.add_column(col, no_wrap=col not in ("fired", "resolved by"))
    for r in rows:
        table.add_row(r["started_at"][:19].replace("T", " "), duration(r["duration_seconds"]), r["name"],
                      r["service"], r["check"], str(r["notifications_sent"]), r["fired"], r["resolved_by"] or "-")
    _console().print(table)


def _since(text: str, now: datetime) -> datetime:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise ConfigError(f"--since '{text}': not a date (YYYY-MM-DD)") from None
    try:
        return now - parse_duration(text)
    except ConfigError:
        raise ConfigError(f"--since '{text}': use a date (YYYY-MM-DD) or a duration back such as 7d") from None
