"""``bvh-ops report uptime [--month YYYY-MM] [--json]``: the uptime/SLA report per service for
a month from the samples `bvh-ops monitor` keeps, maintenance windows excluded. The default month
is the previous full calendar month (UTC): an SLA is judged over a closed month, and this is the
report the monthly `uptime-report` deployment publishes. Exit 0, or 1 when a service missed the SLA."""

from __future__ import annotations

from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out

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
    raise typer.Exit(0 if doc["sla_met"] else 1)


@report_app.command("performance")
def performance(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False) -> None:
    """The target's performance report: top queries by total and mean time from pg_stat_statements
    with their change since the snapshot a week back (each run stores a snapshot in the ops
    database), the cache hit ratio, sequential scans on large tables, recommendations with their
    evidence. Without pg_stat_statements it says so and reports the rest."""
    from datetime import UTC, datetime

    from bvh_ops.maintenance.performance import markdown, report
    from bvh_ops.maintenance.run import target_name
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    settings = cli_settings()
    dsn = settings.require_database_url()
    with connect(dsn, autocommit=True) as conn, ops_database(settings) as ops_dsn, \
            connect(ops_dsn, autocommit=True) as ops:
        migrate(ops)
        doc = report(conn, ops, target_name(dsn), datetime.now(UTC))
    if as_json:
        emit_json(doc)
    else:
        out.print(markdown(doc), markup=False)
