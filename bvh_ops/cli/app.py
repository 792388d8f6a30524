"""`bvh-ops`: the operator's command line. Expected failures print one line and exit non-zero
(exit code per error class, see bvh_ops.errors); tracebacks are for bugs only. Each command group
lives in its own module and registers on the shared app when imported here."""

from __future__ import annotations

import sys

import typer

from bvh_ops.cli import (  # noqa: F401 - registers the commands
    alerts,
    archive,
    audit,
    backups,
    capacity,
    drill,
    files,
    keys,
    logs,
    logs_analyze,
    logs_retention,
    maintain,
    monitor,
    ops,
    opsdb,
    replica,
    report,
    restore,
    retention,
    security,
    standby,
)
from bvh_ops.cli.core import app, err
from bvh_ops.errors import BvhOpsError


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except BvhOpsError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # usage errors: click's, or typer's own copy of click (typer >= 0.29)
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
