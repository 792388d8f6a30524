"""What `bvh-ops` does with the errors a flow run leaves when the Prefect API goes away under it
(a Ctrl-C to the process group stops the temporary API the command started): one line and the
transient exit code, never a traceback; other errors still propagate."""

from __future__ import annotations

import importlib

import httpx
import pytest

from bvh_ops.errors import TransientError

cli_app = importlib.import_module("bvh_ops.cli.app")  # the module (the package's `app` is the Typer)


@pytest.mark.parametrize("exc, needle", [
    (httpx.ConnectError("[Errno 111] Connection refused"), "lost the Prefect API while the flow ran (ConnectError"),
    (httpx.ReadError("peer closed"), "lost the Prefect API while the flow ran (ReadError"),
    (RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server. Ephemeral server "
                  "process exited with code 0."), "the temporary Prefect API this command starts stopped"),
])
def test_a_lost_prefect_api_is_one_line_and_transient(monkeypatch, capsys, exc, needle):
    def command(standalone_mode):
        raise exc

    monkeypatch.setattr(cli_app, "app", command)
    monkeypatch.setattr("sys.argv", ["bvh-ops", "backup"])
    assert cli_app._run() == TransientError.exit_code
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_other_errors_still_propagate(monkeypatch):
    def command(standalone_mode):
        raise RuntimeError("something else")

    monkeypatch.setattr(cli_app, "app", command)
    with pytest.raises(RuntimeError, match="something else"):
        cli_app._run()
