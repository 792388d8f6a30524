"""The live health dashboard: a Starlette app (``bvh-ops dashboard``).

A background task runs a probe cycle at start and then every ``monitor_interval_seconds``; the
latest cycle answers the runbook's monitoring endpoints (section 10), ``/metrics`` (Prometheus
text) and ``/``, an HTML page with inline SVG charts (no CDN, no JavaScript library) that
refreshes itself. Recent cycles stay in a bounded ring buffer (``MemoryHistory``, two hours at the
interval) that feeds the charts when no ``history`` (the ops-database samples) is given; uptime
per service comes only from ``history`` (a 24 h / 7 d / 30 d SLA figure cannot come from two hours
in memory) and is shown as unavailable without it.

Read-only but for one action: every route is GET (HEAD too), except acknowledging an alert
(``POST /alerts/<fingerprint>/ack``, a form carrying the page's per-process CSRF token, so a
page on another origin cannot acknowledge for you); anything else is 405. With a ``token``, every request
needs ``Authorization: Bearer <token>``, ``?token=<token>`` (which also sets an HttpOnly cookie so
the page's own links and refresh keep working without the token in the page) or that cookie,
compared in constant time. ``check_bind`` refuses a non-loopback bind without a token. No
setting (DSN, token) is ever rendered: pages show check results, whose details carry no secret.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import math
import re
import secrets
import sys
import threading
from collections import deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bvh_ops.config import Settings
from bvh_ops.errors import ConfigError
from bvh_ops.monitoring import exposition
from bvh_ops.monitoring.charts import bucket_stats, svg_line_chart, svg_lines_chart
from bvh_ops.monitoring.cycle import CycleResult, run_cycle
from bvh_ops.monitoring.history import DrillPoint, History, MemoryHistory
from bvh_ops.monitoring.platform_metrics import fetch_platform_metrics, metrics_endpoint
from bvh_ops.monitoring.results import Status
from bvh_ops.monitoring.status import SYSTEM_STATUS, dashboard, with_alerts

LOOPBACK = {"127.0.0.1", "::1", "localhost"}
BUFFER_SECONDS = 2 * 3600
WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "2h": timedelta(hours=2)}
UPTIME_WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
COOKIE = "bvh_ops_dashboard_token"
NO_HISTORY = ("no sample history connected: the ops database is not running (bvh-ops opsdb start; "
              "bvh-ops monitor keeps the samples)")


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_bind(host: str, token: str | None) -> None:
    """Refuse (one line) to serve a non-loopback address without a token."""
    if host not in LOOPBACK and not token:
        raise ConfigError(f"dashboard: binding to {host} (not loopback) requires a token: "
                          "give --token-file FILE (a file holding the token), or bind 127.0.0.1")


class State:
    """The latest cycle, its dashboard dict, and the recent cycles."""

    def __init__(self, maxlen: int) -> None:
        self.cycle: CycleResult | None = None
        self.board: dict | None = None
        self.memory = MemoryHistory(maxlen)
        # The platform's errorRate (its /api/metrics) per cycle of this dashboard: not a check, so
        # not a sample; charted from here (the last two hours at most).
        self.error_rate: deque[tuple[datetime, float]] = deque(maxlen=max(2, maxlen))
        self.cycles_run = 0
        self.last_error = ""


async def _in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a daemon thread: a probe stuck past shutdown must not hold the process."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def settle(value: Any, exc: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(value)

    def run() -> None:
        try:
            value, exc = fn(), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            value, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, value, exc)
        except RuntimeError:  # the loop closed while we ran (shutdown)
            pass

    threading.Thread(target=run, name="dashboard-cycle", daemon=True).start()
    return await fut


class AlertsView(Protocol):
    """What the dashboard shows of alerting (given by the caller: monitoring does not import
    alerting). ``active`` lists pending and firing alerts as ``bvh-ops alerts list --json``;
    ``acknowledge`` returns False when no such active alert exists. Both may raise: the page
    then says alerts are unavailable and why."""

    def active(self) -> list[dict]: ...

    def acknowledge(self, fingerprint: str) -> bool: ...


class CapacityView(Protocol):
    """Capacity as the dashboard shows it (given by the caller: monitoring does not import
    capacity): ``board()`` -> {generated_at, resources: [{name, unit, current, limit,
    days_until, status, reason}], charts: {name: data URI}}; may raise (shown as unavailable)."""

    def board(self) -> dict: ...


def create_app(settings: Settings, *, history: History | None = None, token: str | None = None,
               clock: Callable[[], datetime] = utcnow, alerts: AlertsView | None = None,
               capacity: CapacityView | None = None) -> Starlette:
    interval = float(settings.monitor_interval_seconds)
    csrf = secrets.token_urlsafe(24)
    state = State(math.ceil(BUFFER_SECONDS / interval) + 1)
    metrics_ep = metrics_endpoint(settings.endpoints)

    def one_cycle() -> tuple[CycleResult, dict]:
        cycle = run_cycle(settings, clock())
        body, why = fetch_platform_metrics(metrics_ep) if metrics_ep is not None else (None, "")
        board = dashboard(cycle, platform_metrics=body, history=None)
        if why:
            board["notes"].append(f"platform metrics unavailable: {why}")
        return cycle, board

    async def loop() -> None:
        while True:
            started = asyncio.get_running_loop().time()
            try:
                cycle, board = await _in_daemon_thread(one_cycle)
            except Exception as exc:  # noqa: BLE001 - a bug in one cycle must not stop the dashboard
                state.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                sys.stderr.write(f"dashboard: probe cycle failed: {state.last_error}\n")
            else:
                state.memory.add(cycle)
                rate = board["metrics"].get("errorRate")
                if isinstance(rate, int | float) and not isinstance(rate, bool):
                    state.error_rate.append((cycle.checked_at, float(rate)))
                state.cycle, state.board, state.last_error = cycle, board, ""
                state.cycles_run += 1
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, interval - elapsed))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def starting() -> JSONResponse:
        return JSONResponse({"status": "starting", "detail": state.last_error or "the first probe cycle is running"},
                            status_code=503, headers={"Retry-After": str(max(1, int(interval)))})

    def status_board(alert_rows: list[dict] | None = None) -> dict:
        board = dict(state.board or {})
        board["notes"] = list(board.get("notes", []))
        if alert_rows is not None:
            with_alerts(board, alert_rows)
        board["uptime"] = uptime(history, list(board.get("services", {})), clock())
        board["notes"] = [n for n in board.get("notes", []) if not n.startswith("uptime:")]
        if history is None:
            board["notes"].append(f"uptime: {NO_HISTORY}")
        return board

    # /api/health (and /detailed) answer from the last probe cycle alone, never waiting on the ops
    # database (a liveness answer must be fast); /api/status and the page add the firing alerts.
    async def api_health(request: Request) -> Response:
        if state.board is None:
            return starting()
        board = state.board
        return JSONResponse({
            "status": board["systemStatus"], "timestamp": board["checkedAt"],
            "services": {name: service_word(svc) for name, svc in board["services"].items()},
            "metrics": {k: board["metrics"].get(k) for k in ("responseTime", "uptime", "activeUsers")}})

    async def api_health_detailed(request: Request) -> Response:
        if state.cycle is None or state.board is None:
            return starting()
        return JSONResponse({"status": state.board["systemStatus"], "timestamp": state.board["checkedAt"],
                             "checks": [c.to_json() for c in state.cycle.checks],
                             "notMonitored": state.cycle.not_monitored,
                             "services": {n: service_word(s) for n, s in state.board["services"].items()}})

    async def api_metrics(request: Request) -> Response:
        if state.board is None:
            return starting()
        return JSONResponse({"timestamp": state.board["checkedAt"], "system": state.board["metrics"],
                             "sources": state.board["metricSources"]})

    async def api_status(request: Request) -> Response:
        if state.board is None:
            return starting()
        rows, _ = await _in_daemon_thread(alert_rows)
        return JSONResponse(status_board(rows))

    async def prometheus(request: Request) -> Response:
        if state.cycle is None:
            return Response("# no probe cycle has finished yet\n", status_code=503, media_type="text/plain")
        return Response(exposition.render(state.cycle), media_type=exposition.CONTENT_TYPE)

    def alert_rows() -> tuple[list[dict] | None, str]:
        if alerts is None:
            return None, "alerting is not connected: the ops database is not running (bvh-ops opsdb start)"
        try:
            return alerts.active(), ""
        except Exception as exc:  # noqa: BLE001 - shown on the page, never fatal
            return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"

    def capacity_board() -> tuple[dict | None, str]:
        if capacity is None:
            return None, "capacity planning is not connected: the ops database is not running"
        try:
            return capacity.board(), ""
        except Exception as exc:  # noqa: BLE001 - shown on the page, never fatal
            return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"

    async def api_capacity(request: Request) -> Response:
        board, why = await _in_daemon_thread(capacity_board)
        if board is None:
            return JSONResponse({"error": f"capacity unavailable: {why}"}, status_code=503)
        return JSONResponse({k: v for k, v in board.items() if k != "charts"})

    async def api_alerts(request: Request) -> Response:
        rows, why = await _in_daemon_thread(alert_rows)
        if rows is None:
            return JSONResponse({"error": f"alerts unavailable: {why}"}, status_code=503)
        return JSONResponse(rows)

    async def ack(request: Request) -> Response:
        fingerprint = request.path_params["fingerprint"]
        form = parse_qs((await request.body()).decode("latin-1"))
        given = (form.get("csrf") or [""])[0]
        if not hmac.compare_digest(given.encode(), csrf.encode()):
            return JSONResponse({"error": "forbidden: acknowledge from the dashboard page (missing or stale form "
                                          "token)"}, status_code=403)
        if alerts is None or not re.fullmatch(r"[0-9a-f]{4,16}", fingerprint):
            return JSONResponse({"error": "no such alert"}, status_code=404)
        found = await _in_daemon_thread(lambda: alerts.acknowledge(fingerprint))
        if not found:
            return JSONResponse({"error": f"no pending or firing alert {fingerprint}"}, status_code=404)
        return RedirectResponse("/#alerts", status_code=303)

    async def page(request: Request) -> Response:
        window = request.query_params.get("window", "15m")
        window = window if window in WINDOWS else "15m"
        if state.board is None or state.cycle is None:
            body = (f"<h1>bvh-ops health dashboard</h1><p class='status'>starting: "
                    f"{html.escape(state.last_error or 'the first probe cycle is running')}</p>")
            return HTMLResponse(_html(body, refresh=2), status_code=503)
        now = clock()
        source = history if history is not None else state.memory
        rows, why = await _in_daemon_thread(alert_rows)
        cap = await _in_daemon_thread(capacity_board)
        body = render_page(status_board(rows), state.cycle, settings, source, window, now, interval,
                           history_is_memory=history is None, error_rate=list(state.error_rate),
                           metrics_configured=metrics_ep is not None, alerts=(rows, why), csrf=csrf,
                           capacity=cap)
        return HTMLResponse(_html(body, refresh=max(5, int(interval))))

    routes = [Route("/", page, methods=["GET"]),
              Route("/api/health", api_health, methods=["GET"]),
              Route("/api/health/detailed", api_health_detailed, methods=["GET"]),
              Route("/api/metrics", api_metrics, methods=["GET"]),
              Route("/api/status", api_status, methods=["GET"]),
              Route("/metrics", prometheus, methods=["GET"]),
              Route("/api/alerts", api_alerts, methods=["GET"]),
              Route("/api/capacity", api_capacity, methods=["GET"]),
              Route("/alerts/{fingerprint}/ack", ack, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dashboard = state
    if token:
        return TokenGate(app, token)  # type: ignore[return-value]
    return app


class TokenGate:
    """ASGI middleware: every HTTP request must carry the token (header, query or cookie)."""

    def __init__(self, app: Starlette, token: str) -> None:
        self.app, self.token = app, token.encode()
        self.state = app.state

    def _given(self, scope: dict) -> tuple[bytes | None, bool]:
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0].encode(), True
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        if COOKIE in cookie:
            return cookie[COOKIE].value.encode(), False
        return None, False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given, from_query = self._given(scope)
        if given is None or not hmac.compare_digest(given, self.token):
            response = JSONResponse({"error": "unauthorized: give Authorization: Bearer <token> or ?token="},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if not from_query:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                cookie = (f"{COOKIE}={self.token.decode()}; HttpOnly; SameSite=Strict; Path=/").encode()
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def service_word(svc: dict) -> str:
    """A service in the runbook's words (healthy | warning | critical); not monitored says so."""
    return SYSTEM_STATUS[Status(svc["status"])] if svc.get("monitored") else "not monitored"


def uptime(history: History | None, services: list[str], now: datetime) -> dict[str, dict]:
    """HealthDashboard.uptime: per service, the percentage up over 24 h / 7 d / 30 d from history."""
    out: dict[str, dict] = {}
    for name in services:
        if history is None:
            out[name] = {**dict.fromkeys(UPTIME_WINDOWS), "available": False, "reason": NO_HISTORY}
            continue
        try:
            figures = {w: history.uptime(name, now - d, now) for w, d in UPTIME_WINDOWS.items()}
        except Exception as exc:  # noqa: BLE001 - the ops database being down is reported, not fatal
            out[name] = {**dict.fromkeys(UPTIME_WINDOWS), "available": False,
                         "reason": f"history unavailable: {type(exc).__name__}: {str(exc)[:200]}"}
            continue
        out[name] = {**figures, "available": True, "reason": ""}
    return out


# -- the HTML page -------------------------------------------------------------------------------

_COLORS = {"ok": "#1a7f37", "healthy": "#1a7f37", "warning": "#9a6700", "unknown": "#8250df",
           "critical": "#cf222e", "not monitored": "#6e7781"}
_CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border-bottom:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}h1{margin-bottom:.2em}.status{font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:12px}.muted{color:#6e7781}"""
_UNITS = {"responseTime": "ms", "memoryUsage": "%", "cpuUsage": "%", "errorRate": "%", "uptime": "%"}


def _html(body: str, *, refresh: int) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='refresh' content='{refresh}'><title>bvh-ops health dashboard</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def _badge(word: str) -> str:
    return f"<span class='status' style='color:{_COLORS.get(word, '#1f2328')}'>{html.escape(word)}</span>"


def _value(v: object, unit: str = "") -> str:
    if v is None:
        return "<span class='muted'>not measured</span>"
    return html.escape(f"{v:g} {unit}".strip() if isinstance(v, int | float) else str(v))


def render_page(board: dict, cycle: CycleResult, settings: Settings, source: History, window: str,
                now: datetime, interval: float, *, history_is_memory: bool,
                error_rate: list[tuple[datetime, float]] | None = None, metrics_configured: bool = False,
                alerts: tuple[list[dict] | None, str] = (None, "alerting is not connected"), csrf: str = "",
                capacity: tuple[dict | None, str] = (None, "capacity planning is not connected")) -> str:
    e = html.escape
    parts = [f"<h1>bvh-ops health dashboard</h1><p>System status: <span id='system-status'>"
             f"{_badge(board['systemStatus'])}</span> <span class='muted'>checked at {e(board['checkedAt'])}"
             f" · {len(cycle.checks)} checks · a probe cycle every {interval:g} s</span></p>"]
    # alerts first: what on-call looks at
    parts.append(_alerts_section(*alerts, csrf))
    # services
    rows = "".join(f"<tr><td>{e(name)}</td><td>{_badge(service_word(svc))}</td><td>{e(str(svc['detail']))}</td></tr>"
                   for name, svc in board["services"].items())
    parts.append(f"<h2>Services</h2><table><tr><th>service</th><th>status</th><th>detail</th></tr>{rows}</table>")
    # metrics
    rows = "".join(f"<tr><td>{e(k)}</td><td>{_value(v, _UNITS.get(k, ''))}</td>"
                   f"<td class='muted'>{e(board['metricSources'].get(k) or '')}</td></tr>"
                   for k, v in board["metrics"].items())
    parts.append(f"<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>source</th></tr>{rows}</table>")
    # backups and drills
    backups = [c for c in cycle.checks if c.service == "backups"]
    if backups:
        rows = "".join(f"<tr><td>{e(c.name)}</td><td>{_badge(str(c.status))}</td><td>{_value(c.value, c.unit)}</td>"
                       f"<td>{e(c.detail)}</td></tr>" for c in backups)
        table = f"<table><tr><th>check</th><th>status</th><th>value</th><th>detail</th></tr>{rows}</table>"
    else:
        table = f"<p class='muted'>{e(str(board['services'].get('backups', {}).get('detail', 'not monitored')))}</p>"
    parts.append(f"<h2>Backups and drills</h2>{table}")
    # uptime
    rows = []
    for name, up in board["uptime"].items():
        if up.get("available"):
            cells = "".join(f"<td>{_value(up[w], '%')}</td>" for w in UPTIME_WINDOWS)
        else:
            cells = f"<td colspan='{len(UPTIME_WINDOWS)}' class='muted'>unavailable: {e(up.get('reason', ''))}</td>"
        rows.append(f"<tr><td>{e(name)}</td>{cells}</tr>")
    heads = "".join(f"<th>{w}</th>" for w in UPTIME_WINDOWS)
    parts.append(f"<h2>Uptime (SLA 99.9 %)</h2><table><tr><th>service</th>{heads}</tr>{''.join(rows)}</table>")
    # charts
    links = " · ".join(f"<b>{w}</b>" if w == window else f"<a href='?window={w}'>{w}</a>" for w in WINDOWS)
    since = now - WINDOWS[window]
    span = (since.timestamp(), now.timestamp())
    charts = []
    bucket = bucket_seconds(WINDOWS[window], interval)
    for ep in settings.endpoints:
        charts.append(_response_chart(source, ep.name, since, now, span, bucket))
    charts.append(_chart(source, "host.cpu", since, now, span, "CPU", "%", 100.0))
    charts.append(_chart(source, "host.memory", since, now, span, "memory", "%", 100.0))
    for name in sorted({c.name for c in cycle.checks if c.name.startswith("host.disk:")}):
        charts.append(_chart(source, name, since, now, span, f"disk {name.split(':', 1)[1]}", "%", 100.0))
    if settings.replica_repository:
        charts.append(_chart(source, "backups.replica_wal", since, now, span,
                             "replica WAL lag (oldest committed WAL not yet on the replica)", "s", None))
    if metrics_configured:
        points = [(t.timestamp(), v) for t, v in error_rate or [] if since <= t <= now]
        charts.append(svg_line_chart(points, 420, 140, title="error rate (the platform's /api/metrics, "
                                     "this dashboard's cycles)", unit="%", x_range=span))
    else:
        charts.append("<p class='muted'>error rate: no /api/metrics endpoint configured (only the platform "
                      "measures it)</p>")
    where = "recent cycles kept in memory (up to 2 h)" if history_is_memory else "the sample history"
    parts.append(f"<h2>Charts</h2><p>Window: {links} <span class='muted'>(from {where})</span></p>"
                 f"<div class='charts'>{''.join(charts)}</div>")
    parts.append(_drill_trend(source if not history_is_memory else None))
    parts.append(_capacity_section(*capacity))
    if board.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in board["notes"]) + "</ul>")
    return "".join(parts)


def _capacity_section(board: dict | None, why: str) -> str:
    e = html.escape
    if board is None:
        return f"<h2 id='capacity'>Capacity</h2><p class='muted'>capacity unavailable: {e(why)}</p>"
    order = {"critical": 0, "warning": 1, "ok": 2, "unpredictable": 3}
    shown = sorted(board["resources"], key=lambda r: (order.get(r["status"], 4), r["name"]))[:12]
    rows = []
    for r in shown:
        until = r.get("days_until")
        days = "–" if not until else f"{until.get('low')}–{until.get('high')} d (expected {until.get('expected')})"
        word = {"critical": "critical", "warning": "warning", "ok": "healthy"}.get(r["status"], "unknown")
        rows.append(f"<tr><td>{e(r['name'])}</td><td>{_badge(word) if word != 'unknown' else e(r['status'])}</td>"
                    f"<td>{e(days)}</td><td class='muted'>{e(str(r.get('reason') or ''))}</td></tr>")
    imgs = "".join(f"<img alt='{e(name)}' src='{uri}' style='max-width:520px'>"
                   for name, uri in list(board.get("charts", {}).items())[:6])
    return (f"<h2 id='capacity'>Capacity</h2><p class='muted'>forecasts of {e(str(board['generated_at']))} "
            f"(bvh-ops report capacity)</p><table><tr><th>resource</th><th>status</th><th>days until the limit"
            f"</th><th>reason</th></tr>{''.join(rows)}</table><div class='charts'>{imgs}</div>")


def _alerts_section(rows: list[dict] | None, why: str, csrf: str) -> str:
    e = html.escape
    if rows is None:
        return f"<h2 id='alerts'>Alerts</h2><p class='muted'>alerts unavailable: {e(why)}</p>"
    if not rows:
        return "<h2 id='alerts'>Alerts</h2><p id='no-alerts'>No pending or firing alerts.</p>"
    out = []
    for a in rows:
        flags = [f for f in ("silenced", "acknowledged", "inhibited") if a.get(f)]
        if a.get("acknowledged"):
            action = f"<span class='muted'>by {e(str(a.get('acknowledged_by') or ''))}</span>"
        else:
            action = (f"<form method='post' action='/alerts/{e(a['fingerprint'])}/ack' style='margin:0'>"
                      f"<input type='hidden' name='csrf' value='{e(csrf)}'><button type='submit'>acknowledge"
                      f"</button></form>")
        word = {"critical": "critical", "warning": "warning"}.get(a["severity"], "healthy")
        out.append(f"<tr class='alert' data-fingerprint='{e(a['fingerprint'])}'><td>{_badge(word)}</td>"
                   f"<td>{e(a['state'])}</td><td>{e(a['name'])}</td><td>{e(a['service'])}</td><td>{e(a['check'])}</td>"
                   f"<td>{e(a['since'][:19].replace('T', ' '))}</td><td>{e(', '.join(flags) or '-')}</td>"
                   f"<td>{e(a.get('detail') or '')}</td><td>{action}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("severity", "state", "alert", "service", "check", "since (UTC)",
                                               "flags", "detail", ""))
    return f"<h2 id='alerts'>Alerts</h2><table id='alert-table'><tr>{head}</tr>{''.join(out)}</table>"


def _chart(source: History, name: str, since: datetime, until: datetime, span: tuple[float, float],
           title: str, unit: str, y_max: float | None) -> str:
    try:
        points = [(t.timestamp(), v) for t, v in source.series(name, since, until)]
    except Exception as exc:  # noqa: BLE001 - history down: say so where the chart would be
        return f"<p class='muted'>{html.escape(title)}: history unavailable ({html.escape(type(exc).__name__)})</p>"
    return svg_line_chart(points, 420, 140, title=title, unit=unit, x_range=span, y_max=y_max)


def bucket_seconds(window: timedelta, interval: float) -> float:
    """The response-time chart's bucket: about 30 per window, at least 4 probe cycles each."""
    return max(window.total_seconds() / 30, 4 * interval)


def _response_chart(source: History, name: str, since: datetime, until: datetime, span: tuple[float, float],
                    bucket: float) -> str:
    title = f"response time: {name}"
    try:
        points = [(t.timestamp(), v) for t, v in source.series(name, since, until)]
    except Exception as exc:  # noqa: BLE001 - history down: say so where the chart would be
        return f"<p class='muted'>{html.escape(title)}: history unavailable ({html.escape(type(exc).__name__)})</p>"
    stats = bucket_stats(points, bucket)
    series = [(label, [(t + bucket / 2, row[i]) for t, *row in stats]) for i, label in enumerate(("avg", "p95", "p99"))]
    return svg_lines_chart(series, 420, 140, title=f"{title} (per {bucket:g} s)", unit="ms", x_range=span)


def _drill_trend(history: History | None) -> str:
    """The drills' RTO and RPO over the last drills (ops.drills), one RTO line per mode (a
    logical restore, a physical restore to a time and a failover are different promises), the
    objectives drawn beside them, and the last drills in a table with their verdicts."""
    e = html.escape
    head = "<h2 id='drill-trend'>DR drill RTO/RPO trend</h2>"
    if history is None or not hasattr(history, "drills"):
        return head + ("<p class='muted'>no drills yet: the ops database is not connected "
                       "(bvh-ops opsdb start; bvh-ops drill records each drill)</p>")
    try:
        drills = [DrillPoint(*row) for row in history.drills(20)]
    except Exception as exc:  # noqa: BLE001 - the ops database being down is reported, not fatal
        return head + f"<p class='muted'>drills unavailable ({e(type(exc).__name__)})</p>"
    if not drills:
        return head + "<p class='muted'>no drills yet</p>"
    first, last = drills[0].started_at, drills[-1].started_at
    span = (first.timestamp(), last.timestamp()) if last > first else None
    modes = sorted({d.mode for d in drills})
    rto = [(f"RTO {mode}" if len(modes) > 1 else "RTO",
            [(d.started_at.timestamp(), float(d.rto_seconds)) for d in drills
             if d.mode == mode and d.rto_seconds is not None]) for mode in modes]
    rpo = [("RPO", [(d.started_at.timestamp(), float(d.rpo_seconds)) for d in drills if d.rpo_seconds is not None])]
    rto_obj = _objective(drills, "rto_objective_seconds", "RTO objective")
    rpo_obj = _objective(drills, "rpo_objective_seconds", "RPO objective")
    charts = (svg_lines_chart(rto + rto_obj, 420, 140, title="DR drills: recovery time", unit="s", x_range=span)
              + svg_lines_chart(rpo + rpo_obj, 420, 140, title="DR drills: data loss window", unit="s",
                                x_range=span))
    failed = sum(1 for d in drills if not d.passed)
    rows = "".join(
        f"<tr><td>{e(d.started_at.isoformat(timespec='minutes'))}</td><td>{e(d.mode)}</td>"
        f"<td>{_verdict(d.passed)}</td>"
        f"<td>{_value(d.rto_seconds, 's')}</td><td>{_value(d.rpo_seconds, 's')}</td></tr>"
        for d in reversed(drills[-5:]))
    return head + (f"<p class='muted'>the last {len(drills)} drill(s), {e(first.isoformat(timespec='minutes'))}"
                   f" … {e(last.isoformat(timespec='minutes'))}; {failed} failed</p>"
                   f"<div class='charts'>{charts}</div>"
                   "<table id='drill-table'><tr><th>started</th><th>mode</th><th>verdict</th><th>RTO</th><th>RPO</th>"
                   f"</tr>{rows}</table>")


def _verdict(passed: bool) -> str:
    color = _COLORS.get("ok" if passed else "critical", "#1f2328")
    return f"<span class='status' style='color:{color}'>{'passed' if passed else 'FAILED'}</span>"


def _objective(drills: list[DrillPoint], field: str, label: str) -> list[tuple[str, list[tuple[float, float]]]]:
    """The newest drill's objective as a flat line across the chart (none where not recorded)."""
    value = next((getattr(d, field) for d in reversed(drills) if getattr(d, field) is not None), None)
    if value is None:
        return []
    return [(label, [(drills[0].started_at.timestamp(), float(value)), (drills[-1].started_at.timestamp(), float(value))])]


def _can_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address the dashboard cannot listen on (a port in use, an address
    not of this host) before it says it is serving: uvicorn logged its error after our URL."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"dashboard: cannot listen on {host}:{port}: {exc.strerror or exc}: choose another "
                              "--port (or --host)") from None


def serve(settings: Settings, host: str, port: int, *, token: str | None = None, history: History | None = None,
          on_started: Callable[[str], None] | None = None, alerts: AlertsView | None = None,
          capacity: CapacityView | None = None) -> None:
    """Serve the dashboard in the foreground until SIGINT/SIGTERM (uvicorn's handlers)."""
    import uvicorn

    check_bind(host, token)
    _can_listen(host, port)
    config = uvicorn.Config(create_app(settings, history=history, token=token, alerts=alerts, capacity=capacity), host=host, port=port,
                            log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if on_started is not None:
        shown = f"[{host}]" if ":" in host else host
        on_started(f"http://{shown}:{port}/")
    server.run()
