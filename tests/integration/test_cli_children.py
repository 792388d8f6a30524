"""The tests' CLI children (tests/integration/cli.py) come from a fork server that has imported
the heavy modules once (tests/zygote.py). Every test that runs `bvh-ops` through ``run_cli``
relies on a forked command behaving as a command started the operator's way: these prove it,
side by side with a fresh interpreter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import psutil
import pytest

from bvh_ops.pg.cluster import free_port
from tests.integration.cli import restart_fork_server, run_cli

# Commands that need nothing running: help, a usage error, a configuration error naming the field,
# and the settings as the command read them from its own environment.
ALIKE = [
    ("--help",),
    ("backups", "list", "--from", "nowhere"),
    ("restore", "latest", "--no-such-option"),
    ("config", "show"),
]


@pytest.mark.parametrize("args", ALIKE, ids=" ".join)
def test_a_forked_command_answers_exactly_as_a_fresh_interpreter(args, tmp_path):
    env = {"BVH_OPS_DATABASE_URL": "postgresql://ops:s3cret@db.example:5432/lottery",
           "BVH_OPS_REPOSITORY": f"file://{tmp_path}/repo"}
    forked = run_cli(*args, env=env)
    fresh = run_cli(*args, env=env, fresh=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_a_command_does_not_inherit_the_fork_servers_environment(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")  # --help wraps to it
    restart_fork_server()  # a server started with COLUMNS=50
    try:
        forked = run_cli("--help", unset=("COLUMNS",))
        fresh = run_cli("--help", unset=("COLUMNS",), fresh=True)
        narrow = run_cli("--help", fresh=True)
    finally:
        restart_fork_server()
    assert narrow.stdout != fresh.stdout  # the variable matters
    assert forked.stdout == fresh.stdout


def test_each_command_has_only_the_environment_it_was_given(tmp_path):
    repo = f"file://{tmp_path}/repo"
    first = run_cli("config", "show", env={"BVH_OPS_REPOSITORY": repo, "BVH_OPS_SEGMENT_SIZE_KIB": "4096"})
    second = run_cli("config", "show", env={"BVH_OPS_REPOSITORY": repo})
    assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
    assert json.loads(first.stdout)["segment_size_kib"] == 4096
    assert json.loads(second.stdout)["segment_size_kib"] != 4096  # nothing left over from the first


def test_a_command_runs_in_the_callers_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = run_cli("keygen", "keys")  # relative: resolved against the caller's directory
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "keys").is_dir() and any((tmp_path / "keys").iterdir())


def test_a_command_past_its_timeout_is_killed_as_subprocess_run_does(tmp_path):
    port = free_port()
    env = {"BVH_OPS_REPOSITORY": f"file://{tmp_path}/repo", "BVH_OPS_ENDPOINTS": "[]"}
    with pytest.raises(subprocess.TimeoutExpired) as timed_out:
        run_cli("dashboard", "--port", str(port), env=env, timeout=8)  # serves until stopped
    pid = timed_out.value.pid

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    deadline = time.monotonic() + 30
    while listening() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not listening(), "the dashboard outlived its command's timeout"
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:  # reaped by its waiter
        time.sleep(0.2)
    assert not psutil.pid_exists(pid)


@pytest.mark.parametrize(("setting", "args", "took_effect"), [
    # Python fixes its stream encoding when it starts: the non-ASCII name is escaped
    ({"PYTHONIOENCODING": "ascii:backslashreplace"}, ("backups", "list", "--from", "n\u00f6where"),
     lambda p: "n\\xf6where" in p.stderr),
    # typer reads TYPER_USE_RICH when imported: plain help, no boxes
    ({"TYPER_USE_RICH": "0"}, ("--help",), lambda p: "\u256d" not in p.stdout and "Usage:" in p.stdout),
], ids=["PYTHONIOENCODING", "TYPER_USE_RICH"])
def test_a_setting_read_at_start_other_than_the_servers_gets_a_fresh_interpreter(setting, args, took_effect):
    """A command whose environment changes what an interpreter or a preloaded module reads once
    cannot be forked from the server (run_cli starts it fresh)."""
    assert not set(setting) & set(os.environ)
    forked = run_cli(*args, env=setting)
    fresh = run_cli(*args, env=setting, fresh=True)
    assert took_effect(fresh) and not took_effect(run_cli(*args, fresh=True))
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
