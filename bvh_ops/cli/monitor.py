"""Monitoring: health-check (one probe cycle)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bvh_ops.cli.core import app, cli_settings, emit_json, out

_STYLE = {"ok": "green", "warning": "yellow", "unknown": "magenta", "critical": "bold red"}


@app.command("health-check")
def health_check(as_json: Annotated[bool, typer.Option("--json", help="Print {status, checked_at, checks} as JSON")]
                 = False) -> None:
    """Run every configured probe once (HTTP endpoints, database, cache, host, backups); exit 0
    healthy, 1 warning (or a check that could not run: unknown), 2 critical."""
    from bvh_ops.monitoring.cycle import run_cycle
    from bvh_ops.monitoring.results import exit_code

    result = run_cycle(cli_settings())
    if as_json:
        emit_json(result.to_json())
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
    raise typer.Exit(exit_code(result.status))
