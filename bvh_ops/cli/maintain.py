"""``bvh-ops maintain [daily|weekly|monthly] [--dry-run] [--json] [--wait SECONDS]``: assess the
target database and carry out the scope's maintenance (ANALYZE daily; VACUUM, FREEZE and REINDEX
CONCURRENTLY weekly; monthly = weekly), every statement under lock_timeout/statement_timeout,
inside the maintenance window only. Exit 0; 1 when an action failed; 9 when another maintenance
run holds the target."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out
from bvh_ops.errors import ConfigError


def _figures(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    if "index_bytes" in d:
        return f"{d['index_bytes'] / 1048576:.1f} MiB{'' if d.get('valid', True) else ' (invalid)'}"
    if "dead_tuples" in d:
        return f"{d['dead_tuples']} dead, {d['modified_since_analyze']} modified"
    return ", ".join(f"{k} {v}" for k, v in d.items())


def render(report: dict[str, Any]) -> str:
    """The report as the operator reads it: what was planned and why, what happened, what to look at."""
    p = report["plan"]
    lines = [f"maintenance {report['scope']} of {report['target']}: {report['status']}"
             f"{' (dry run)' if report['dry_run'] else ''}; window {p['window']}"
             f"{'' if p['in_window'] else ' (outside it now)'}"]
    if not report["actions"]:
        lines.append("nothing to do: no table or index passes its threshold")
    for a in report["actions"]:
        lines.append(f"{a['status']:<9} {a['action']:<13} {a['object']}  {a['seconds']:.2f}s  "
                     f"{_figures(a['before'])} -> {_figures(a['after'])}")
        lines.append(f"          {a['detail']}")
    for f in report["findings"]:
        lines.append(f"finding   {f['severity']:<9} {f['kind']:<20} {f['object']}: {f['detail']}")
    lines += [f"note      {n}" for n in report["notes"]]
    for m in report.get("disk", {}).get("mounts", []):
        lines.append(f"disk      {m['path']}: {m['percent']} % used, {m['free_bytes'] // 2**20} MiB free")
    rec = report.get("recorded")
    if rec and rec.get("error"):
        lines.append(f"warning   the run was not fully recorded in the ops database: {rec['error']}")
    return "\n".join(lines)


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
