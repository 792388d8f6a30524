"""``bvh-ops logs …``: the command group the log commands register on."""

from __future__ import annotations

import typer

from bvh_ops.cli.core import app

logs_app = typer.Typer(no_args_is_help=True, help="Logs: collect, search, analyze, retention and legal holds.")
app.add_typer(logs_app, name="logs")
