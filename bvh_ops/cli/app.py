"""`bvh-ops`: the operator's command line. Expected failures print one line and exit non-zero
(exit code per error class, see bvh_ops.errors); tracebacks are for bugs only. Each command group
lives in its own module and registers on the shared app when imported (``load_commands``)."""

from __future__ import annotations

import atexit
import importlib
import os
import sys

# The process's status once main() is done; None (an unexpected exception) keeps Python's own exit.
_exit_status: int | None = None


def _exit_without_teardown() -> None:
    """The last exit handler: registered here, before anything imports ``logging`` or Prefect,
    so it runs after all the others (Prefect's log and event workers drained into the API,
    logging's handlers flushed and closed). It ends the process without the interpreter's
    teardown: freeing Prefect's object graph one object at a time cost 0.3-0.5 s of CPU after
    every flow command (2-3 s of wall time on a loaded machine), for nothing the OS does not do."""
    if _exit_status is None:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_status)


atexit.register(_exit_without_teardown)

import typer  # noqa: E402

from bvh_ops.cli.core import app, err  # noqa: E402
from bvh_ops.errors import BvhOpsError, StorageError, TransientError  # noqa: E402

# The command group modules that register each top-level command (tests/unit/test_cli_commands.py
# keeps this table equal to what they register). A command imports its own modules and Typer
# builds only their commands; no command, --help or an unknown name: all of them.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "alerts": ("alerts",), "archive": ("archive",), "audit": ("audit",), "backup": ("backups",),
    "backups": ("backups",), "capacity": ("capacity",), "config": ("ops",), "dashboard": ("monitor",),
    "demo": ("ops",), "drill": ("drill",), "failover": ("standby",), "files": ("files",),
    "health-check": ("monitor",), "keygen": ("backups",), "keys": ("keys",),
    "logs": ("logs", "logs_analyze", "logs_retention"), "maintain": ("maintain",), "monitor": ("monitor",),
    "opsdb": ("opsdb",), "replica": ("replica",), "replicate": ("replica",),
    "report": ("alerts", "capacity", "report"), "restore": ("restore",), "retention": ("retention",),
    "security": ("security",), "serve": ("ops",), "setup-notifications": ("ops",), "standby": ("standby",),
    "status": ("monitor",), "verify": ("backups",), "wal-fetch": ("ops",), "wal-push": ("ops",),
}
ALL_MODULES = tuple(sorted({m for modules in COMMAND_MODULES.values() for m in modules}))


def load_commands(argv: list[str] | None = None) -> None:
    """Register the commands ``argv`` (default: every command) can run."""
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for module in COMMAND_MODULES.get(command or "", ALL_MODULES):
        importlib.import_module(f"bvh_ops.cli.{module}")


def main() -> None:
    global _exit_status
    load_commands(sys.argv[1:])
    _exit_status = _run()
    sys.exit(_exit_status)


def _failed(message: str, code: int) -> int:
    """An expected failure: its one line on stderr and, under --json, the same as a document on
    stdout ({"ok": false, "error", "exit_code"}), so a caller parsing the output is not left with
    nothing to parse."""
    err.print(f"error: {message}", markup=False)
    if "--json" in sys.argv[1:]:
        import json

        print(json.dumps({"ok": False, "error": message, "exit_code": code}))
    return code


def _run() -> int:
    """The command's exit status; expected failures printed as one line."""
    try:
        rc = app(standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except BvhOpsError as exc:
        return _failed(str(exc), exc.exit_code)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        return 130
    except SystemExit as exc:  # sys.exit() inside a command
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        raise
    except OSError as exc:
        # A path the operator gave that cannot be used (missing, a file where a directory is
        # needed, no permission): one line naming it, not a traceback.
        if exc.filename is None or not exc.strerror:
            raise
        where = f"{exc.filename}" + (f" → {exc.filename2}" if exc.filename2 else "")
        return _failed(f"{where}: {exc.strerror}: give a path that exists and this user may write (or read)",
                       StorageError.exit_code)
    except RuntimeError as exc:
        if str(exc).startswith("Failed to reach API at"):  # Prefect's, before any flow run exists
            err.print(f"error: {exc.args[0].rstrip('.')}: start that Prefect server (`prefect server start`) or "
                      "unset PREFECT_API_URL to run on a temporary local API", markup=False)
            return TransientError.exit_code
        if str(exc).startswith("Timed out while attempting to connect to ephemeral Prefect API server"):
            return _failed(f"{exc.args[0].rstrip('.')}: the temporary Prefect API this command starts stopped or did "
                           "not come up (a Ctrl-C to its process group stops it): nothing ran — run the command "
                           "again", TransientError.exit_code)
        raise
    except Exception as exc:  # usage errors: click's, or typer's own copy of click (typer >= 0.29)
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            return exc.exit_code
        if any(c.__name__ == "TransportError" and c.__module__.startswith("httpx") for c in type(exc).__mro__):
            # The Prefect API went away mid-run: the temporary one this command started was
            # stopped with it (a Ctrl-C to the process group, a kill), or a server went down.
            return _failed(f"lost the Prefect API while the flow ran ({type(exc).__name__}: {exc}): the run did not "
                           "finish (what it had committed before stays: `bvh-ops backups list`) — run the command again "
                           "(a temporary API stops with a Ctrl-C to its process group)", TransientError.exit_code)
        raise


if __name__ == "__main__":
    main()
