"""Monitoring: health-check (one probe cycle, as a table, JSON or Prometheus text), status (the
runbook's HealthDashboard from one cycle) and dashboard (the live dashboard server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bvh_ops.cli.core import app, cli_settings, emit_json, out

_STYLE = {"ok": "green", "warning": "yellow", "unknown": "magenta", "critical": "bold red"}


@app.command("health-check")
def health_check(as_json: Annotated[bool, typer.Option("--json", help="Print {status, checked_at, checks} as JSON")]
                 = False,
                 prometheus: Annotated[bool, typer.Option("--prometheus",
                                                          help="Print the Prometheus text exposition format")]
                 = False) -> None:
    """Run every configured probe once (HTTP endpoints, database, cache, host, backups); exit 0
    healthy, 1 warning (or a check that could not run: unknown), 2 critical."""
    from bvh_ops.monitoring.cycle import run_cycle
    from bvh_ops.monitoring.results import exit_code

    if as_json and prometheus:
        from bvh_ops.errors import ConfigError

        raise ConfigError("health-check: choose one of --json and --prometheus")
    settings = cli_settings()
    result = run_cycle(settings)
    alerts = _alerts_once(settings, result)
    if prometheus:
        from bvh_ops.monitoring.exposition import render

        sys.stdout.write(render(result))
    elif as_json:
        emit_json({**result.to_json(), "alerts": alerts})
    else:
        table = Table(box=None, pad_edge=False)
        for name in ("status", "service", "check", "value", "detail"):
            table.add_column(name, no_wrap=name != "detail")
        for c in result.checks:
            value = "-" if c.value is None else f"{c.value:g} {c.unit}".strip()
            table.add_row(f"[{_STYLE[c.status]}]{c.status}[/]", c.service, c.name, value, c.detail)
        console = out if out.is_terminal else Console(highlight=False, width=200)
        console.print(table)
        console.print(f"overall: [{_STYLE[result.status]}]{result.status}[/] at {result.checked_at:%Y-%m-%d %H:%M:%S} "
                      f"UTC ({len(result.checks)} checks, {result.wall_seconds:.2f} s, "
                      f"{result.cpu_seconds:.2f} s CPU)")
        if result.not_monitored:
            console.print("not monitored: " + ", ".join(result.not_monitored))
        console.print(f"alerts: {alerts['summary']}", markup=False, highlight=False)
    raise typer.Exit(exit_code(result.status))


def _alerts_once(settings, result) -> dict:
    """One cycle's alert evaluation and delivery (bounded by the channels' timeout), where the
    ops database keeps the alert state between runs and no monitor evaluates them already."""
    from bvh_ops.opsdb.database import running_dsn

    if running_dsn(settings) is None:
        return {"evaluated": False, "summary": "not evaluated (alert state lives in the ops database, which is "
                                               "not running: bvh-ops opsdb start)"}
    from bvh_ops.alerting.runtime import AlertingRuntime

    runtime = AlertingRuntime.start(settings, lambda: running_dsn(settings), background=False)
    if runtime is None:
        return {"evaluated": False, "summary": "evaluated by the running monitor, not here"}
    try:
        cycle = runtime.after_cycle(result)
    finally:
        runtime.stop(drain_seconds=settings.alerting.timeout_seconds + 5)
    sent = [n for n in runtime.alerter.notifications.values() if n.status == "sent" and n.created_at == result.checked_at]
    firing = [s.alert.name + f" ({s.alert.service})" for s in runtime.alerter.firing() if s.phase == "firing"]
    summary = cycle.summary() or "no change"
    if firing:
        summary += f"; firing: {', '.join(firing)}"
    if runtime.note:
        summary += f"; {runtime.note}"
    if cycle.problem:
        summary += f"; {cycle.problem}"
    return {"evaluated": True, "summary": summary, "events": [{"kind": e.kind, "name": e.alert.name,
                                                               "severity": str(e.alert.severity),
                                                               "service": e.alert.service, "check": e.alert.check}
                                                              for e in cycle.events],
            "firing": firing, "notifications_sent": len(sent)}


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print the runbook's HealthDashboard as JSON")]
           = False) -> None:
    """Run one probe cycle and show the runbook's health dashboard: the overall status, each
    service (database, cache, api, frontend, backups, ...), SystemMetrics, the firing alerts; exit
    code from the systemStatus it shows (0 healthy, 1 warning or unknown, 2 critical): the probes'
    as health-check's, raised by a firing alert (health-check judges the probes alone)."""
    from bvh_ops.monitoring.cycle import run_cycle
    from bvh_ops.monitoring.platform_metrics import fetch_platform_metrics, metrics_endpoint
    from bvh_ops.monitoring.results import exit_code
    from bvh_ops.monitoring.status import dashboard

    settings = cli_settings()
    result = run_cycle(settings)
    body, why = None, ""
    if (endpoint := metrics_endpoint(settings.endpoints)) is not None:
        body, why = fetch_platform_metrics(endpoint)
    board = dashboard(result, platform_metrics=body, history=None)
    if why:
        board["notes"].append(f"platform metrics unavailable: {why}")
    from bvh_ops.opsdb.database import running_dsn

    if running_dsn(settings):  # uptime from the samples `bvh-ops monitor` keeps
        from bvh_ops.monitoring.history import OpsHistory
        from bvh_ops.monitoring.web import uptime

        board["uptime"] = uptime(OpsHistory(lambda: running_dsn(settings)), list(board["services"]),
                                 result.checked_at)
        board["notes"] = [n for n in board["notes"] if not n.startswith("uptime:")]
        from bvh_ops.alerting.view import OpsAlertsView

        try:
            from bvh_ops.monitoring.status import with_alerts

            with_alerts(board, OpsAlertsView(lambda: running_dsn(settings)).active())
        except Exception as exc:  # noqa: BLE001 - the status still prints, saying why alerts are missing
            board["notes"].append(f"alerts unavailable: {type(exc).__name__}")
    if as_json:
        emit_json(board)
    else:
        _print_dashboard(board)
    # The exit code says what systemStatus says (a firing critical alert makes it 2 as a probe does).
    raise typer.Exit(max(exit_code(result.status), {"healthy": 0, "warning": 1, "critical": 2}[board["systemStatus"]]))


_SYSTEM_STYLE = {"healthy": "green", "warning": "yellow", "critical": "bold red"}
_UNITS = {"responseTime": "ms", "memoryUsage": "%", "cpuUsage": "%", "errorRate": "%", "uptime": "%"}


def _print_dashboard(board: dict) -> None:
    console = out if out.is_terminal else Console(highlight=False, width=200)
    state = board["systemStatus"]
    console.print(f"system: [{_SYSTEM_STYLE[state]}]{state}[/] at {board['checkedAt']}")
    services = Table(box=None, pad_edge=False, title="services", title_justify="left")
    for name in ("service", "status", "detail"):
        services.add_column(name, no_wrap=name != "detail")
    for name, svc in board["services"].items():
        shown = svc["status"] if svc["monitored"] else "not monitored"
        services.add_row(escape(name), f"[{_STYLE[svc['status']]}]{shown}[/]", escape(svc["detail"]))
    console.print(services)
    metrics = Table(box=None, pad_edge=False, title="metrics", title_justify="left")
    for name in ("metric", "value", "source"):
        metrics.add_column(name, no_wrap=True)
    for name, value in board["metrics"].items():
        shown = "-" if value is None else f"{value:g} {_UNITS.get(name, '')}".strip()
        metrics.add_row(name, shown, board["metricSources"][name] or "not measured")
    console.print(metrics)
    if board.get("alerts"):
        alerts = Table(box=None, pad_edge=False, title="alerts", title_justify="left")
        for name in ("severity", "state", "alert", "service", "since", "flags"):
            alerts.add_column(name, no_wrap=True)
        for a in board["alerts"]:
            flags = ",".join(f for f in ("silenced", "acknowledged", "inhibited") if a.get(f)) or "-"
            alerts.add_row(f"[{_STYLE.get(a['severity'], 'white')}]{a['severity']}[/]", a["state"], escape(a["name"]),
                           escape(a["service"]), a["since"][:19].replace("T", " "), flags)
        console.print(alerts)
    for note in board["notes"]:
        console.print(f"note: {note}")


@app.command("dashboard")
def dashboard_cmd(host: Annotated[str, typer.Option("--host", help="Address to bind (a token is required "
                                                                    "unless it is loopback)")] = "127.0.0.1",
                  port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port")] = 8765,
                  token_file: Annotated[Path | None, typer.Option("--token-file",
                                                                  help="File holding the access token")] = None) -> None:
    """Serve the live health dashboard (HTML page, /api/health, /api/health/detailed, /api/metrics,
    /api/status, /metrics) in the foreground, a probe cycle every monitor_interval_seconds; stops
    on SIGINT/SIGTERM. Read-only; a non-loopback bind requires --token-file."""
    from bvh_ops.errors import ConfigError
    from bvh_ops.monitoring.web import check_bind, serve

    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"dashboard: cannot read --token-file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise ConfigError(f"dashboard: --token-file {token_file} is empty")
    check_bind(host, token)
    settings = cli_settings()
    # Charts and uptime from the samples `bvh-ops monitor` keeps, where the ops database runs;
    # otherwise from the dashboard's own recent cycles (uptime then unavailable).
    from bvh_ops.monitoring.history import OpsHistory
    from bvh_ops.opsdb.database import running_dsn

    history = OpsHistory(lambda: running_dsn(settings)) if running_dsn(settings) else None
    if history is None:
        out.print("dashboard: the ops database is not running: charts from recent cycles only, uptime "
                  "unavailable (bvh-ops opsdb start; bvh-ops monitor keeps the samples)", markup=False)
    from bvh_ops.alerting.view import OpsAlertsView
    from bvh_ops.capacity.view import OpsCapacityView

    serve(settings, host, port, token=token, history=history, alerts=OpsAlertsView(lambda: running_dsn(settings)),
          capacity=OpsCapacityView(settings, lambda: running_dsn(settings)),
          on_started=lambda url: out.print(f"dashboard: {url} (Ctrl-C or SIGTERM stops it)", markup=False,
                                           highlight=False))


@app.command("monitor")
def monitor(interval: Annotated[float | None, typer.Option("--interval", min=0.05,
                                                           help="Seconds between cycles (default "
                                                                "monitor_interval_seconds)")] = None,
            cycles: Annotated[int | None, typer.Option("--cycles", min=1, help="Stop after N cycles")] = None) -> None:
    """Run the probe cycle in the foreground every interval, recording each cycle's samples into
    the ops database (ops_database_url, or the running embedded one: never started here); rolls
    up hourly, applies retention daily. SIGTERM/SIGINT finish the current cycle and exit 0."""
    import signal
    import threading

    from bvh_ops.monitoring.cycle import run_cycle
    from bvh_ops.monitoring.loop import History, run_monitor
    from bvh_ops.opsdb.database import running_dsn

    settings = cli_settings()
    every = settings.monitor_interval_seconds if interval is None else interval
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    history = History(lambda: running_dsn(settings))
    from bvh_ops.alerting.runtime import AlertingRuntime

    alerting = AlertingRuntime.start(settings, lambda: running_dsn(settings))
    if alerting is None:
        sys.stdout.write("alerting: evaluated by another running monitor; this one probes and records only\n")
    elif alerting.note:
        sys.stdout.write(alerting.note + "\n")
    alert_lines: list[str] = []
    said: list[str | None] = [None]

    def probe():
        result = run_cycle(settings)
        if alerting is not None:
            cycle_alerts = alerting.after_cycle(result)
            if cycle_alerts.events or cycle_alerts.queued:
                alert_lines.append(f"alerts: {cycle_alerts.summary()}")
            if cycle_alerts.problem != said[0]:   # said once, and again when it changes or clears
                alert_lines.append(f"alert state: {cycle_alerts.problem or 'written to the ops database again'}")
                said[0] = cycle_alerts.problem
        return result

    def report(result, problem: str | None) -> None:
        bad = ", ".join(f"{c.name} {c.status}" for c in result.checks if c.status != "ok")
        line = (f"{result.checked_at:%Y-%m-%d %H:%M:%S} UTC {result.status} ({len(result.checks)} checks, "
                f"{result.wall_seconds:.2f} s)" + (f"; not ok: {bad}" if bad else ""))
        sys.stdout.write(line + "\n")
        for done in history.maintenance:
            sys.stdout.write(f"history: {done}\n")
        if problem is not None:
            sys.stdout.write(f"history unavailable: {problem}\n")
        for line in alert_lines:
            sys.stdout.write(line + "\n")
        alert_lines.clear()
        sys.stdout.flush()

    sys.stdout.write(f"monitoring every {every:g} s" + (f" for {cycles} cycles" if cycles else "") +
                     " (SIGTERM or Ctrl-C stops after the current cycle)\n")
    sys.stdout.flush()
    try:
        done = run_monitor(probe, history, interval=every, cycles=cycles, stop=stop, report=report)
    finally:
        if alerting is not None:
            alerting.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    sys.stdout.write(f"stopped after {done} cycle(s)\n")
    raise typer.Exit(0)
