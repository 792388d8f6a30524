"""``bvh-ops report uptime [--month YYYY-MM] [--json]``: the uptime/SLA report per service for
a month from the samples `bvh-ops monitor` keeps, maintenance windows excluded. The default month
is the previous full calendar month (UTC): an SLA is judged over a closed month, and this is the
report the monthly `uptime-report` deployment publishes. Exit 0, or 1 when a service missed the SLA."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out
from bvh_ops.errors import ConfigError

report_app = typer.Typer(no_args_is_help=True, help="Reports over the monitoring history.")
app.add_typer(report_app, name="report")


@report_app.command("uptime")
def uptime(month: Annotated[str | None, typer.Option("--month", help="YYYY-MM (UTC); default: the previous full "
                                                     "month")] = None,
           sla: Annotated[float, typer.Option("--sla", min=0, max=100, help="SLA target in percent")] = 99.9,
           as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False) -> None:
    """Uptime per service for a month (per probe cycle the service's worst status: critical is
    down, unknown counts neither way; cycles inside maintenance_windows excluded), against the
    SLA, with each service's longest outage. Exit 0, or 1 when any service missed the SLA."""
    from datetime import UTC, datetime

    from bvh_ops.errors import DatabaseError
    from bvh_ops.monitoring.report import markdown, parse_month, per_cycle_rows, previous_month, uptime_report
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.pg.conn import connect

    settings = cli_settings()
    now = datetime.now(UTC)
    month = month or previous_month(now)
    parse_month(month)  # a malformed month fails before any database is started
    with ops_database(settings) as dsn, connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('ops.samples')").fetchone()[0] is None:
            raise DatabaseError("the ops database has no samples table: run `bvh-ops opsdb start` (it migrates) "
                                "and `bvh-ops monitor`")
        rows = per_cycle_rows(conn, month, now)
    doc = uptime_report(rows, month, settings.maintenance_windows, sla)
    if as_json:
        emit_json(doc)
    else:
        out.print(markdown(doc), markup=False)
    raise typer.Exit(0 if doc["sla_met"] else 1)  # None (nothing measured) is not met


@report_app.command("performance")
def performance(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
                charts_dir: Annotated[Path | None, typer.Option(
                    "--charts", help="Write the report's charts (endpoint p95 per day, table bloat per snapshot) as "
                                     "PNG files into this directory")] = None) -> None:
    """The target's performance report: top queries by total and mean time from pg_stat_statements
    with their change since the snapshot a week back, index usage and table bloat over the week
    (each run stores its snapshots in the ops database), the monitored endpoints' response times
    and failures against the week before, the cache hit ratio, sequential scans on large tables,
    recommendations with their evidence. Without pg_stat_statements it says so and reports the rest."""
    from datetime import UTC, datetime

    from bvh_ops.maintenance.charts import charts
    from bvh_ops.maintenance.performance import limits_of, markdown, report
    from bvh_ops.maintenance.run import target_name
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    settings = cli_settings()
    dsn = settings.require_database_url()
    if charts_dir is not None:  # before anything is stored: a bad directory is the one error line
        _writable_dir(charts_dir)
    with connect(dsn, autocommit=True) as conn, ops_database(settings) as ops_dsn, \
            connect(ops_dsn, autocommit=True) as ops:
        migrate(ops)
        doc = report(conn, ops, target_name(dsn), datetime.now(UTC), endpoints=[e.name for e in settings.endpoints],
                     limits=limits_of(settings))
    if charts_dir is not None:
        written = []
        for title, png in charts(doc, settings.response_time_warning_ms).items():
            path = charts_dir / ("".join(c if c.isalnum() or c in "._-" else "_" for c in title) + ".png")
            try:
                path.write_bytes(png)
            except OSError as exc:
                raise ConfigError(f"--charts {charts_dir}: cannot write {path.name}: {exc.strerror}") from None
            written.append(str(path))
        doc["charts"] = written
    if as_json:
        emit_json(doc)
    else:
        out.print(markdown(doc), markup=False)


def _writable_dir(directory: Path) -> None:
    """``directory`` exists (made if need be) and takes a new file, or a ConfigError naming why."""
    import tempfile

    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--charts {directory}: not a directory; give a directory for the PNG files")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".bvh-charts-"):
            pass
    except OSError as exc:
        raise ConfigError(f"--charts {directory}: {exc.strerror or exc}; give a directory you can write") from None
