"""drill: the DR drill flow from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from bvh_ops.cli.core import (
    FROM_HELP,
    app,
    emit_json,
    out,
    require_prefect_home,
    source_settings,
)
from bvh_ops.drill.render import print_drill
from bvh_ops.errors import BvhOpsError, ConfigError


@app.command()
def drill(
    backup: Annotated[str, typer.Option("--backup", help="Backup id or 'latest'")] = "latest",
    mode: Annotated[str, typer.Option("--mode", help="logical | physical | both")] = "logical",
    to_time: Annotated[str | None, typer.Option("--to-time", help="Target / simulated disaster time (ISO 8601)")] = None,
    to_lsn: Annotated[str | None, typer.Option("--to-lsn", help="Physical mode: recover to this LSN")] = None,
    scratch: Annotated[str, typer.Option(help="embedded | configured (drill_scratch_dsn)")] = "embedded",
    source: Annotated[str, typer.Option("--from", help=FROM_HELP)] = "primary",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the DR drill flow: restore, start, check, measure RTO/RPO; exit 0 only if it passed."""
    from datetime import UTC, datetime

    if mode not in ("logical", "physical", "both"):
        raise ConfigError(f"--mode {mode!r}: use logical, physical or both")
    if scratch not in ("embedded", "configured"):
        raise ConfigError(f"--scratch {scratch!r}: use embedded or configured")
    target = None
    if to_time:
        try:
            target = datetime.fromisoformat(to_time)
        except ValueError:
            raise ConfigError(f"--to-time {to_time!r} is not an ISO 8601 time (e.g. 2026-11-27T02:00:00Z)") from None
        target = target if target.tzinfo else target.replace(tzinfo=UTC)
    settings = source_settings(source)
    settings.require_repository()
    settings.require_identity()
    if scratch == "configured" and settings.drill_scratch_dsn is None:
        raise ConfigError("--scratch configured needs drill_scratch_dsn: set BVH_OPS_DRILL_SCRATCH_DSN (a server "
                          "the drill may create databases on), or use --scratch embedded")
    if backup != "latest":
        # A mistyped id is the operator's, not a failed drill: one line, before a drill that
        # would fail its select stage and tell alerting of "data corruption".
        from bvh_ops.repository.open import open_repository
        from bvh_ops.repository.repo import BACKUPS

        repo, _ = open_repository(settings, check=False)
        if next(iter(repo.store.list(f"{BACKUPS}/{backup}/")), None) is None:
            from bvh_ops.errors import NotFound

            raise NotFound(f"no backup {backup} in {repo.store.url}: see `bvh-ops backups list`")
    require_prefect_home()
    from flows.dr_drill import DrillFailed, dr_drill

    try:
        if to_lsn:
            from bvh_ops.pg.lsn import parse_lsn

            try:
                parse_lsn(to_lsn)
            except BvhOpsError as exc:
                raise ConfigError(f"--to-lsn: {exc}") from None
            if mode == "logical":
                raise ConfigError("--to-lsn applies to physical drills: add --mode physical (or both)")
        from bvh_ops.cli.progress import live_progress

        with live_progress(as_json=as_json):
            report = dr_drill(backup=backup, to_time=target, mode=mode, scratch=scratch, to_lsn=to_lsn, source=source)
    except DrillFailed as exc:
        report = exc.report
    if as_json:
        emit_json(report)
    else:
        print_drill(report, out)
    raise typer.Exit(0 if report["passed"] else 8)
