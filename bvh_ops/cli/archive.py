"""``bvh-ops archive monthly [--physical auto|on|off] [--json]``: the monthly-archive flow now."""

from __future__ import annotations

from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out, require_prefect_home
from bvh_ops.errors import ConfigError

archive_app = typer.Typer(no_args_is_help=True, help="The monthly archive tier (#17).")
app.add_typer(archive_app, name="archive")


@archive_app.command("monthly")
def monthly(
    physical: Annotated[str, typer.Option("--physical", help="auto | on | off: the physical full")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Take the month's archive (logical + physical full), deep-verify it, drill it, lock it.
    Exit 0 only when every step passed."""
    if physical not in ("auto", "on", "off"):
        raise ConfigError(f"--physical {physical!r}: use auto, on or off")
    settings = cli_settings()
    settings.require_repository()
    settings.require_database_url()
    settings.require_identity()
    require_prefect_home()
    from flows.monthly_archive import ArchiveFailed, monthly_archive

    try:
        report = monthly_archive(physical=physical)
    except ArchiveFailed as exc:
        report = exc.report
    if as_json:
        emit_json(report)
    else:
        from bvh_ops.archive.render import archive_lines

        for line in archive_lines(report):
            out.print(line, markup=False)
    raise typer.Exit(0 if report["passed"] else 8)
