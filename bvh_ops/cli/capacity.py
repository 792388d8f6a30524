"""``bvh-ops capacity collect [--json]`` (one collection: what the daily collect-capacity flow
runs) and ``bvh-ops report capacity [--json]`` (the capacity report: days until each limit, how
sure, what to do)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, err, out
from bvh_ops.cli.report import report_app

capacity_app = typer.Typer(no_args_is_help=True, help="Capacity planning: usage history and forecasts.")
app.add_typer(capacity_app, name="capacity")


@contextmanager
def _ops(settings):
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    with ops_database(settings) as dsn, connect(dsn, autocommit=True) as conn:
        migrate(conn)
        yield conn


@capacity_app.command("collect")
def collect_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print the samples as JSON")] = False) -> None:
    """Collect today's capacity samples into the ops database (a second run the same day replaces
    them) and backfill history where none exists yet. A measure that could not run is named with
    its reason on stderr and the command exits 1 (what was measured is stored)."""
    from bvh_ops.capacity.collect import collect
    from bvh_ops.capacity.report import human

    settings = cli_settings()
    with _ops(settings) as conn:
        result = collect(settings, conn)
    if as_json:
        emit_json(result.to_json())
    else:
        for s in result.samples:
            out.print(f"{s.series:<48} {human(s.value, s.unit)}", markup=False)
        for measure in result.not_configured:
            out.print(f"not configured: {measure}", markup=False)
        for measure, why in result.warnings:
            out.print(f"history shorter: {measure} could not run: {why}", markup=False)
        out.print(f"{len(result.samples)} series for {result.day}; {result.backfilled} day(s) of history "
                  "backfilled", markup=False)
    if not result.complete:
        err.print(f"error: {result.incomplete_line()}", markup=False)
        raise typer.Exit(1)


@report_app.command("capacity")
def capacity_report(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
                    save: Annotated[bool, typer.Option("--save", help="Keep these forecasts for scoring (the "
                                                       "monthly capacity-planning run does)")] = False,
                    charts_dir: Annotated[Path | None, typer.Option("--charts", help="Write the charts as PNG files "
                                                                    "into this directory")] = None) -> None:
    """Per resource: current use, limit, growth per month, days until the limit (low-expected-
    high), status ok|warning|critical|unpredictable with the reason, the model and its backtest
    error, and how far off the forecasts of 1 and 3 months ago were. Exit 1 when a resource is
    critical (less than capacity.critical_days to its limit, or over it)."""
    from datetime import UTC, datetime

    from bvh_ops.capacity.report import charts, markdown, report_parts, save_forecasts

    settings = cli_settings()
    now = datetime.now(UTC)
    with _ops(settings) as conn:
        doc, forecasts, history = report_parts(settings, conn, now)
        if save:
            save_forecasts(conn, now.date(), forecasts)
    text = markdown(doc)
    if charts_dir is not None:
        charts_dir.mkdir(parents=True, exist_ok=True)
        for name, png in charts(doc, forecasts, history).items():
            (charts_dir / ("".join(c if c.isalnum() or c in "._-" else "_" for c in name) + ".png")).write_bytes(png)
    if as_json:
        emit_json(doc)
    else:
        out.print(text, markup=False)
    raise typer.Exit(1 if any(r["status"] == "critical" for r in doc["resources"]) else 0)

