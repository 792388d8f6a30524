"""The live progress display of long commands: on a terminal (a real pty around a real child
process) a progress line appears; piped, or with --json, nothing but the result."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import pytest

from bvh_ops.logical.backup import run_logical_backup
from tests.integration.cli import run_cli


@pytest.fixture
def backed_up(sample_db, repo_dir, make_settings, keypair, tmp_path):
    settings = make_settings(sample_db, f"file://{repo_dir}")
    run_logical_backup(settings)
    return {"BVH_OPS_REPOSITORY": f"file://{repo_dir}", "BVH_OPS_IDENTITY": str(keypair[1]),
            "BVH_OPS_STATE_DIR": str(tmp_path / "state")}


def run_in_pty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; everything it drew, decoded."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
    full_env.update(env, TERM="xterm-256color", COLUMNS="160", LINES="40")
    main, sub = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "bvh_ops.cli", *args], stdin=subprocess.DEVNULL, stdout=sub,
                            stderr=sub, env=full_env)
    os.close(sub)
    out = b""
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(main)
    return proc.wait(timeout=120), out.decode(errors="replace")


def test_deep_verify_on_a_terminal_shows_a_progress_line(backed_up):
    rc, drawn = run_in_pty(["verify", "latest", "--deep", "--no-wal"], backed_up)
    assert rc == 0, drawn
    lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln) for ln in drawn.splitlines() if "verify dump.pgcustom" in ln]
    assert lines, drawn
    # The last drawing: bytes done of the manifest's size, all of it, and the time taken.
    assert re.search(r"(\d+\.\d)/\1 [kM]B", lines[-1]) and "elapsed 0:00:" in lines[-1], lines[-1]


def test_piped_or_json_output_stays_quiet(backed_up):
    piped = run_cli("verify", "latest", "--deep", "--no-wal", env=backed_up)
    assert piped.returncode == 0, piped.stderr
    assert "verify dump.pgcustom" not in piped.stdout + piped.stderr and "\x1b[" not in piped.stderr
    rc, drawn = run_in_pty(["verify", "latest", "--deep", "--no-wal", "--json"], backed_up)
    assert rc == 0, drawn
    assert "verify dump.pgcustom" not in drawn and "elapsed" not in drawn
    assert '"ok": true' in drawn


def test_a_task_retried_says_so_on_a_terminal(tmp_path, keypair, cli_prefect_api):
    """A backup against a server that is down was silent through all its retries (2 min 40 s by
    default), then printed its one error line; piped, it stays that one line. (Through the
    worker's Prefect server: the ephemeral start is test_cli's and test_orphans' subject.)"""
    env = {"BVH_OPS_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "BVH_OPS_REPOSITORY": f"file://{tmp_path}/r",
           "BVH_OPS_RECIPIENTS": str(keypair[0]), "BVH_OPS_IDENTITY": str(keypair[1]),
           "BVH_OPS_STATE_DIR": str(tmp_path / "state"), "BVH_OPS_TASK_RETRIES": "2",
           "BVH_OPS_RETRY_DELAY_SECONDS": "0.2"}
    rc, drawn = run_in_pty(["backup"], env)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    assert rc == 4, text
    retries = [ln for ln in text.splitlines() if ln.startswith("retry ")]
    assert [ln.split(" in ")[0] for ln in retries] == ["retry 1/2", "retry 2/2"], text
    assert all("database unreachable at 127.0.0.1:1 (connection refused)" in ln for ln in retries)
    piped = run_cli("backup", env=env)
    assert piped.returncode == 4 and "retry " not in piped.stderr
    assert len([ln for ln in piped.stderr.splitlines() if ln.strip()]) == 1, piped.stderr
