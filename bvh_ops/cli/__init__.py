"""`bvh-ops`, the operator's command line (Typer): the app and its command groups; flows are
imported inside commands, never at module load (start-up time)."""

from bvh_ops.cli.app import app, main

__all__ = ["app", "main"]
