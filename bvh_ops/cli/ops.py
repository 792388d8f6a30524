"""Operations: serve, setup-notifications, wal-push/wal-fetch, config show, demo."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from bvh_ops.cli.core import (
    app,
    cli_settings,
    config_app,
    emit_json,
    out,
    require_prefect_home,
)
from bvh_ops.errors import BvhOpsError


@app.command()
def serve() -> None:
    """Serve every deployment of prefect.yaml with its schedule from this machine (no work pool)."""
    cli_settings()
    require_prefect_home()
    from deployments.serve import serve as run_serve

    run_serve()


@app.command("setup-notifications")
def setup_notifications() -> None:
    """Create or update the monitor's dead-man automations (no completed monitoring run for a
    while; a failed monitoring run) on the webhook (idempotent)."""
    if not os.environ.get("PREFECT_API_URL"):
        raise BvhOpsError("PREFECT_API_URL is not set: point it at your Prefect server (…/api) first")
    from deployments.notifications import setup_notifications as setup

    result = setup(cli_settings())
    for name, action in result["automations"].items():
        out.print(f"automation '{name}' {action} with {result['notifications']} notification(s)")
    for name in result["removed"]:
        out.print(f"automation '{name}' removed: those failures are alerts of the monitor now")


@app.command("wal-push")
def wal_push_cmd(path: Annotated[str, typer.Argument(help="%p: the WAL file PostgreSQL wants archived")]) -> None:
    """archive_command: compress, encrypt and store one WAL file (idempotent; never overwrites)."""
    from bvh_ops.wal.store import wal_push

    wal_push(cli_settings(), path)


@app.command("wal-fetch")
def wal_fetch_cmd(
    name: Annotated[str, typer.Argument(help="%f: the WAL file name PostgreSQL asks for")],
    dest: Annotated[str, typer.Argument(help="%p: where to write it")],
) -> None:
    """restore_command: fetch, decrypt and write one WAL file (exit 1 when it is not archived,
    126 when it cannot be delivered; the same as `bvh-ops-wal fetch`)."""
    cli_settings()  # a configuration error is one line here, like every command's
    from bvh_ops.walcmd import fetch

    raise typer.Exit(fetch(name, dest))


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration, secrets redacted."""
    from bvh_ops.config import config_file_path

    settings = cli_settings()
    data = settings.redacted()
    data["_config_file"] = str(config_file_path()) if config_file_path() else None
    emit_json(data)


@app.command()
def demo(
    scale: Annotated[float, typer.Option(help="Sample data scale (1 = ~20 MB)")] = 2.0,
    keep_running: Annotated[bool, typer.Option(help="Leave PostgreSQL (with the ops database), the sample "
                                                    "platform, a bvh-ops monitor loop and the dashboard running")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Only stop what --keep-running left running")] = False,
) -> None:
    """Embedded PostgreSQL 18 + sample lottery data -> daily-backup flow -> deep verify -> restore -> compare."""
    from bvh_ops.demo.run import run_demo, stop_demo

    if stop:
        stop_demo(out)
        return
    require_prefect_home()
    ok = run_demo(scale=scale, keep_running=keep_running, console=out)
    raise typer.Exit(0 if ok else 8)
