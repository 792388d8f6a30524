"""``bvh-ops logs analyze [--since 24h] [--json] [--no-report]``: run every detector over the
collected records in the ops database (``ops.log_records``, streamed) and the platform database's
ledger (``database_url``, when set), print the findings, and report them to alerting as source
``log-analysis`` (the complete set: findings no longer seen in the window are cleared). Exit 0,
or 1 when a critical finding is active."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from bvh_ops.cli.core import cli_settings, emit_json, out
from bvh_ops.cli.logs import logs_app
from bvh_ops.errors import ConfigError

_AGO = re.compile(r"(\d+)([mhd])")


def parse_since(text: str, now: datetime) -> datetime:
    """``30m``, ``24h``, ``7d`` before now, or an ISO time (UTC when it names no zone)."""
    if m := _AGO.fullmatch(text.strip()):
        n, unit = int(m[1]), m[2]
        try:
            return now - timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: n})
        except OverflowError:
            raise ConfigError(f"--since {text!r}: reaches back before the year 1; give a shorter duration or an "
                              "ISO time") from None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected e.g. 30m, 24h, 7d or an ISO time") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@logs_app.command("analyze")
def analyze_cmd(since: Annotated[str, typer.Option("--since", help="30m, 24h, 7d or an ISO time")] = "24h",
                as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON")] = False,
                report: Annotated[bool, typer.Option("--report/--no-report",
                                                     help="Report the findings to alerting")] = True) -> None:
    """Find attacks, bottlenecks and fraud in the collected logs (and the platform's ledger)."""
    from bvh_ops.logs.analysis.run import run_analysis
    from bvh_ops.opsdb.database import ops_database

    settings = cli_settings()
    now = datetime.now(UTC)
    start = parse_since(since, now)
    with ops_database(settings) as dsn:
        doc = run_analysis(settings, dsn, start, now, report=report)
    if as_json:
        emit_json(doc)
    else:
        out.print(f"log analysis {doc['since']} .. {doc['now']}: {doc['records']} records, "
                  f"{len(doc['findings'])} findings", markup=False)
        for f in doc["findings"]:
            out.print(f"  [{f['severity']}] {f['detector']} {f['subject']}: {f['detail']} "
                      f"({f['count']}, {f['first_seen']} .. {f['last_seen']})", markup=False)
        for s in doc["skipped"]:
            out.print(f"  skipped {s['detector']}: {s['reason']}", markup=False)
    raise typer.Exit(1 if any(f["severity"] == "critical" for f in doc["findings"]) else 0)
