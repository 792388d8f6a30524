"""A drill report rendered for a terminal (the CLI and the demo print the same)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_drill(report: dict, out: Console) -> None:
    """The drill report as a table of checks, the stages and RTO/RPO against the objectives."""
    table = Table(title=f"DR drill {report['drill_id']}: {'PASSED' if report['passed'] else 'FAILED'}")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for c in report["checks"]:
        color = {"passed": "green", "failed": "red"}.get(c["status"], "yellow")
        table.add_row(c["name"], f"[{color}]{c['status']}[/]", c["detail"])
    out.print(table)
    stages = ", ".join(f"{s['name']} {s['seconds']:.1f}s" for s in report["stages"])
    rto = report["rto_seconds"]
    rpo = report["rpo_seconds"]
    out.print(f"backup {report['backup_id']}; stages: {stages}")
    out.print(f"RTO {rto if rto is not None else '–'} s (objective {report['objectives']['rto_seconds']:.0f} s); "
              f"RPO {rpo if rpo is not None else '–'} s (objective {report['objectives']['rpo_seconds']:.0f} s); "
              f"trend: {report.get('trend', '-')}")
