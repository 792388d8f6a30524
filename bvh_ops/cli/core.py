"""What every command group shares: the Typer apps, the consoles, JSON output, settings and the
Prefect home check. Prefect reads its environment at import, so it is set here, first."""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Prefect reads these at import time; keep operator-set values.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# An expected failure is one `error:` line here; the run's full log (tracebacks included) still
# goes to the Prefect API and shows in the UI's run history.
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from bvh_ops.errors import ConfigError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Provable backups and rehearsed recovery for the BrachaVeHatzlacha lottery platform.")
backups_app = typer.Typer(no_args_is_help=True, help="The backup catalog.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
app.add_typer(backups_app, name="backups")
app.add_typer(config_app, name="config")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def refuse_empty_paths(*options: str) -> None:
    """An option given an empty path (``--target-dir ''``): the Path it becomes is the current
    directory, which a restore then called "not empty". Refused, naming the option."""
    import sys

    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        for option in options:
            if arg == f"{option}=" or (arg == option and i + 1 < len(argv) and argv[i + 1].strip() == ""):
                from bvh_ops.errors import ConfigError

                raise ConfigError(f"{option} is empty: give a path")


def cli_settings():
    from bvh_ops.config import load_settings

    refuse_empty_paths("--target-dir", "--out")  # before anything is read or written
    return load_settings()


def source_settings(source: str):
    """``--from primary|replica``: the settings whose repository is the one asked for (the
    replica's own endpoint, region and profile: Settings.for_replica)."""
    return cli_settings().for_source(source)


FROM_HELP = "primary | replica: the repository to use (replica: replica_repository, e.g. the primary region is gone)"


def require_prefect_home() -> None:
    """Fail in one line, before Prefect starts, when its home cannot be written: otherwise the
    ephemeral API server dies silently and the CLI waits out its startup timeout."""
    import tempfile

    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        raise ConfigError(f"Prefect's home {home} is not writable ({exc.strerror or exc}): set PREFECT_HOME to a "
                          "directory this user can write (e.g. PREFECT_HOME=/var/lib/bvh-ops/prefect)") from None
    # Without PREFECT_API_URL: start the ephemeral API server now, from this main thread, as a
    # child that dies with us even on kill -9 (Prefect would start it from any thread, unguarded).
    from bvh_ops.cli.prefect_api import start_prefect_api

    start_prefect_api()


@contextmanager
def loading_for_good() -> Iterator[None]:
    """Around importing Prefect and a flow module: about a million objects that live as long as
    the process. The cyclic garbage collector would walk them again and again while they load
    (10 % of the import's CPU) and in every full collection after; pause it while they load,
    then freeze them (kept out of every later collection) and resume it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
