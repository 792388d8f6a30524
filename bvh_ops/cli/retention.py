"""``bvh-ops retention [--json] [--explain ID] [--no-dry-run]``: the GFS retention plan of the
backups (KEEP / DELETE / HELD / UNTRUSTED with every reason), and why one backup is kept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from bvh_ops.cli.core import FROM_HELP, app, emit_json, out, source_settings


@app.command()
def retention(
    dry_run: Annotated[bool, typer.Option("--dry-run/--no-dry-run", help="Only show the plan (default); "
                                          "--no-dry-run deletes what it marks DELETE")] = True,
    explain: Annotated[str | None, typer.Option("--explain", metavar="ID",
                                                help="Say every reason backup ID is kept (or why it goes)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON")] = False,
    source: Annotated[str, typer.Option("--from", help=FROM_HELP)] = "primary",
) -> None:
    """Show (or with --no-dry-run apply) the GFS retention plan, WAL pruning included. Each
    repository expires on its own (--from replica): replicate never propagates deletions."""
    from bvh_ops.archive.render import explain_line, retention_lines
    from bvh_ops.errors import NotFound
    from bvh_ops.expire import apply_plan, policy_of
    from bvh_ops.repository.open import open_existing_repository

    settings = source_settings(source)
    repo, _ = open_existing_repository(settings)
    if explain is not None:
        dry_run = True  # explaining never deletes
    doc = apply_plan(repo, now=datetime.now(UTC), policy=policy_of(settings), settings=settings, dry_run=dry_run)
    doc["dry_run"] = dry_run
    if explain is not None:
        match = [d for d in doc["decisions"] if d["backup_id"] == explain]
        if not match:
            raise NotFound(f"backup {explain} is not a complete backup in {repo.store.url}: "
                           "see `bvh-ops backups list`")
        if as_json:
            emit_json(match[0])
        else:
            out.print(explain_line(match[0]), markup=False)
        return
    if as_json:
        emit_json(doc)
        return
    for line in retention_lines(doc):
        out.print(line, markup=False)
