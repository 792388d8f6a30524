"""``bvh-ops logs ...``: the logs command group (#13). Each part registers its commands on
``logs_app`` from its own module (logs_analyze.py: ``analyze``)."""

from __future__ import annotations

import typer

from bvh_ops.cli.core import app

logs_app = typer.Typer(no_args_is_help=True, help="Collected logs: collection, search, analysis.")
app.add_typer(logs_app, name="logs")
