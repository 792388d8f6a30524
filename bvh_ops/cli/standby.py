"""``bvh-ops standby create|status|fences`` and ``bvh-ops failover``: a warm standby from the
archive, its lag, and its promotion with the old primary fenced (#17)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out

standby_app = typer.Typer(no_args_is_help=True, help="A warm standby that replays the archived WAL.")
app.add_typer(standby_app, name="standby")

JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]
TARGET = Annotated[Path, typer.Option("--target-dir", help="The standby's data directory")]
FROM = Annotated[str, typer.Option("--from", help="Repository to build from: primary or replica")]


def _audit(settings, action: str, subject: str, data: dict) -> None:
    from bvh_ops.audit.record import record

    record(settings, None, action, subject, data)


@standby_app.command("create")
def create_cmd(target_dir: TARGET, source: FROM = "primary",
               backup: Annotated[str, typer.Option("--backup", help="Base backup id or 'latest'")] = "latest",
               port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port (default: a free one)")] = None,
               start: Annotated[bool, typer.Option("--start", help="Start it and wait until it is consistent")] = False,
               os_user: Annotated[str | None, typer.Option("--os-user", help="Run as root: the server's OS user")]
               = None,
               as_json: JSON = False) -> None:
    """Build a warm standby in a new directory from the repository: a physical restore that
    keeps fetching WAL as it is archived (standby.signal), archiving into the same repository
    once promoted by `bvh-ops failover`."""
    from bvh_ops.standby.standby import create_standby

    settings = cli_settings()
    doc = create_standby(settings, target_dir, source=source, backup=backup, port=port, start=start,
                         os_user=os_user)
    _audit(settings, "standby.create", doc["data_dir"], {k: doc[k] for k in ("source", "backup_id", "port")})
    if as_json:
        emit_json(doc)
        return
    out.print(f"standby in {doc['data_dir']} from {doc['source']} repository {doc['repository']}, base "
              f"{' + '.join(doc['chain'])}, port {doc['port']}" + ("; started" if doc["started"] else
                                                                  f"; start it: pg_ctl -D {doc['data_dir']} start"),
              markup=False)


@standby_app.command("status")
def status_cmd(target_dir: TARGET, as_json: JSON = False) -> None:
    """Replay lag: the segment replayed, the newest archived, lag in segments, bytes and
    seconds. Exit 0 when within the RPO objective, 1 when behind or stopped."""
    from bvh_ops.standby.standby import standby_status

    settings = cli_settings()
    doc = standby_status(settings, target_dir, now=datetime.now(UTC))
    if as_json:
        emit_json(doc)
    else:
        out.print(render_status(doc), markup=False)
    raise typer.Exit(0 if doc["state"] == "standby" and doc["within_rpo"] and not doc["gap"] else 1)


def render_status(doc: dict) -> str:
    lines = [f"standby {doc['target_dir']}: {doc['state']} (timeline {doc['timeline']}, port {doc['port']}, "
             f"from {doc['source']} {doc['repository']})"]
    lines.append(f"  replayed: {doc['replayed_segment'] or '-'} (written by the primary {doc['replayed_at'] or '?'})")
    lines.append(f"  archive:  {doc['archive_newest'] or '-'} (written {doc['archive_newest_at'] or '?'})")
    if doc["waiting_for"]:
        lines.append(f"  waiting for {doc['waiting_for']} since {doc['waiting_since']} (not archived yet)")
    behind = doc["behind_seconds"]
    lines.append(f"  lag: {doc['lag_segments'] if doc['lag_segments'] is not None else '?'} segments, "
                 f"{doc['lag_bytes'] if doc['lag_bytes'] is not None else '?'} bytes, "
                 f"{f'{behind:.0f}' if behind is not None else '?'} s behind the archive; newest data "
                 f"{doc['data_age_seconds'] if doc['data_age_seconds'] is not None else '?'} s old; RPO objective "
                 f"{doc['rpo_objective_seconds']:.0f} s: {'within' if doc['within_rpo'] else 'NOT within'}")
    if doc["gap"]:
        lines.append(f"  gap: {doc['gap']}")
    return "\n".join(lines)


@standby_app.command("fences")
def fences_cmd(source: FROM = "primary", as_json: JSON = False) -> None:
    """The fence records in the repository (timelines closed by a failover) and who signed them."""
    from bvh_ops.standby.failover import show_fences
    from bvh_ops.standby.standby import repository_settings

    fences = show_fences(repository_settings(cli_settings(), source))
    if as_json:
        emit_json(fences)
        return
    if not fences:
        out.print("no fences")
    for f in fences:
        out.print(f"{f['key']}: timeline {f.get('timeline')} → {f.get('new_timeline')} at {f.get('switch_lsn')}, "
                  f"{f.get('fenced_at')} on {f.get('host')}; {f['detail']}", markup=False)


@app.command("failover")
def failover_cmd(target_dir: TARGET,
                 force: Annotated[bool, typer.Option("--force", help="Promote even when behind the RPO objective")]
                 = False,
                 dsn: Annotated[str | None, typer.Option("--dsn", help="Connect to the promoted server with this "
                                                         "(default: database_url's role at 127.0.0.1:its port)")]
                 = None,
                 catch_up: Annotated[float, typer.Option("--catch-up-timeout", help="Seconds to let it replay what "
                                                         "is archived before judging its lag")] = 120.0,
                 as_json: JSON = False) -> None:
    """Promote the standby: checks before (running, in recovery, lag within the RPO objective
    unless --force), promotion, the old primary fenced, checks after (new timeline, history
    archived, archiving to the repository, a test write archived). Exit 8 when refused or a
    check after promotion failed."""
    from bvh_ops.standby.failover import failover

    settings = cli_settings()
    report = failover(settings, target_dir, force=force, dsn=dsn, catch_up_timeout=catch_up)
    _audit(settings, "failover", report["target_dir"], {k: report[k] for k in (
        "old_timeline", "new_timeline", "switch_lsn", "forced", "passed")})
    if as_json:
        emit_json(report)
    else:
        out.print(f"promoted {report['target_dir']}: timeline {report['old_timeline']} → {report['new_timeline']} "
                  f"at {report['switch_lsn']}, port {report['port']}", markup=False)
        for c in report["checks"]:
            out.print(f"  {c['status']:>12}  {c['name']}: {c['detail']}", markup=False)
        if report["fence"]:
            out.print(f"old primary fenced: {report['fence']['key']}. On the old host: stop PostgreSQL and keep it "
                      "stopped (docs/OPERATIONS.md 'Failover at 02:00').", markup=False)
    raise typer.Exit(0 if report["passed"] else 8)


@standby_app.command("fence")
def fence_cmd(target_dir: TARGET,
              to: Annotated[str, typer.Option("--to", help="Repository to write the fence to: primary or replica")]
              = "primary", as_json: JSON = False) -> None:
    """Write the fence of a promoted standby's old timeline into a repository (again): when the
    failover could not reach it (a regional outage), once it is back."""
    from bvh_ops.standby.failover import fence_again

    settings = cli_settings()
    fence = fence_again(settings, target_dir, to=to)
    _audit(settings, "failover.fence", fence["key"], {k: fence[k] for k in ("timeline", "new_timeline", "switch_lsn")})
    if as_json:
        emit_json(fence)
    else:
        out.print(f"fenced: {fence['key']} (timeline {fence['timeline']} ends at {fence['switch_lsn']})", markup=False)
