"""Run the real `bvh-ops` CLI in a child process, the way an operator does.

The child is forked from a server that has already imported the heavy, environment-free modules
(tests/zygote.py): each command is still its own process with its own environment, working
directory, pipes, stdin and exit status, without paying ~0.35 s of imports each time; what a
test cannot rely on is the command's /proc cmdline (the fork server's). ``fresh=True`` (or
``BVH_TEST_FRESH_CLI=1`` for the whole run) starts a new interpreter instead."""

from __future__ import annotations

import array
import atexit
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_ZYGOTE = Path(__file__).parent.parent / "zygote.py"
_server: tuple[subprocess.Popen, str, dict[str, str]] | None = None
# What the interpreter or a preloaded module reads once, at start or import (Python's locale and
# stream settings, typer's TYPER_USE_RICH and its terminal-width and colour variables, psycopg's
# implementation choice): a command whose environment sets one of these other than the fork
# server had it runs in a fresh interpreter. (TZ is applied in the forked command: time.tzset.)
_AT_START = ("LANG", "TERMINAL_WIDTH", "FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS")
_AT_START_PREFIXES = ("PYTHON", "LC_", "TYPER_", "_TYPER_", "PSYCOPG_", "PYDANTIC_")
_lock = threading.Lock()


def run_cli(*args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (),
            timeout: float = 300, fresh: bool = False) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_") and k not in unset}
    full_env.update(env or {})
    if fresh or os.environ.get("BVH_TEST_FRESH_CLI") == "1" or _starts_differently(full_env):
        return subprocess.run([sys.executable, "-m", "bvh_ops.cli", *args], env=full_env, capture_output=True,
                              text=True, timeout=timeout)
    return _forked([*args], full_env, timeout)


def _starts_differently(env: dict[str, str]) -> bool:
    started = _server[2] if _server is not None else os.environ
    names = {n for n in (*env, *started) if n in _AT_START or n.startswith(_AT_START_PREFIXES)}
    return any(env.get(n) != started.get(n) for n in names)


def _zygote_path() -> str:
    global _server
    with _lock:
        if _server is None or _server[0].poll() is not None:
            where = tempfile.mkdtemp(prefix="bvh-zygote-")
            path = os.path.join(where, "socket")
            proc = subprocess.Popen([sys.executable, str(_ZYGOTE), path], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, text=True)
            line = proc.stdout.readline()
            if line.strip() != "ready":
                proc.kill()
                raise RuntimeError(f"the CLI fork server did not start (exit {proc.wait()})")
            _server = (proc, path, dict(os.environ))
            atexit.register(_stop, proc, where)
        return _server[1]


def restart_fork_server() -> None:
    """The next command forks from a new server, started with this process's environment now."""
    global _server
    with _lock:
        if _server is not None:
            _stop(_server[0], os.path.dirname(_server[1]))
            _server = None


def _stop(proc: subprocess.Popen, where: str) -> None:
    proc.kill()
    proc.wait()
    try:
        os.unlink(os.path.join(where, "socket"))
        os.rmdir(where)
    except OSError:
        pass


def _forked(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:  # stdin: the caller's, as subprocess.run leaves it
        null = os.dup(0)
    except OSError:
        null = os.open(os.devnull, os.O_RDONLY)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        while block := os.read(fd, 65536):
            chunks[fd].append(block)

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
    try:
        conn.connect(_zygote_path())
        request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}).encode() + b"\n"
        conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [null, out_w, err_w]))])
        for fd in (null, out_w, err_w):
            os.close(fd)
        null = out_w = err_w = -1
        for r in readers:
            r.start()
        deadline = time.monotonic() + timeout
        conn.settimeout(timeout)
        replies = conn.makefile("rb")
        pid = json.loads(replies.readline())["pid"]
        try:
            line = replies.readline()
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)  # the waiter has not reaped it: the pid is still its
            for r in readers:
                r.join(5)
            raise _timed_out(argv, timeout, pid) from None
        if not line:
            raise RuntimeError("the CLI fork server's waiter went away before the command ended")
        status = json.loads(line)["status"]
        for r in readers:  # a child of the command may still hold the pipes: the same deadline
            r.join(max(0.0, deadline - time.monotonic()))
        if any(r.is_alive() for r in readers):
            raise _timed_out(argv, timeout, pid)
    finally:
        conn.close()
        for fd in (null, out_w, err_w):
            if fd >= 0:
                os.close(fd)
        if not readers[0].is_alive() and not readers[1].is_alive():  # else a timeout left them reading
            for fd in (out_r, err_r):
                os.close(fd)
    stdout, stderr = (_text(b"".join(chunks[fd])) for fd in (out_r, err_r))
    return subprocess.CompletedProcess([sys.executable, "-m", "bvh_ops.cli", *argv],
                                       os.waitstatus_to_exitcode(status), stdout, stderr)


def _timed_out(argv: list[str], timeout: float, pid: int) -> subprocess.TimeoutExpired:
    exc = subprocess.TimeoutExpired([sys.executable, "-m", "bvh_ops.cli", *argv], timeout)
    exc.pid = pid  # the command's process (its cmdline is the fork server's, not these arguments)
    return exc


def _text(data: bytes) -> str:
    """As subprocess.run(text=True) decodes: the locale's encoding, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(data)).read()


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
