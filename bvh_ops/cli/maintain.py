"""``bvh-ops maintain [daily|weekly|monthly] [--dry-run] [--json] [--wait SECONDS]``: assess the
target database and carry out the scope's maintenance (ANALYZE daily; VACUUM, FREEZE and REINDEX
CONCURRENTLY weekly; monthly = weekly), every statement under lock_timeout/statement_timeout,
inside the maintenance window only. Exit 0; 1 when an action failed; 9 when another maintenance
run holds the target."""

from __future__ import annotations

from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out
from bvh_ops.errors import ConfigError
from bvh_ops.maintenance.render import render


@app.command("maintain")
def maintain(scope: Annotated[str, typer.Argument(help="daily (ANALYZE), weekly (VACUUM, FREEZE, REINDEX "
                                                  "CONCURRENTLY, and the daily work) or monthly (= weekly)")]
             = "daily",
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Assess and print the plan; change nothing, "
                                                   "record nothing")] = False,
             as_json: Annotated[bool, typer.Option("--json", help="Print {plan, actions, findings} as JSON")] = False,
             wait: Annotated[float, typer.Option("--wait", min=0, max=86400,
                                                 help="Seconds to wait for a running backup to release the "
                                                      "target before skipping")] = 0.0) -> None:
    """Database maintenance of the target: health facts -> plan -> actions with before/after
    figures. Unused/duplicate indexes, sequences near exhaustion, long sessions and inactive
    slots are reported, never acted on. Exit 1 when an action failed (a lock timeout is not a
    failure: it is reported and retried next run)."""
    from bvh_ops.maintenance.plan import SCOPES
    from bvh_ops.maintenance.run import run_maintenance

    if scope not in SCOPES:
        raise ConfigError(f"scope '{scope}': choose one of {', '.join(SCOPES)}")
    settings = cli_settings()
    report = run_maintenance(settings, scope, dry_run=dry_run, wait_seconds=wait)
    if as_json:
        emit_json({k: report[k] for k in ("run_id", "scope", "target", "status", "dry_run", "plan", "actions",
                                          "findings", "notes", "disk", "cache") if k in report})
    else:
        out.print(render(report), markup=False)
    raise typer.Exit(1 if report["status"] == "failed" else 0)
