"""A fork server for the tests' CLI children (tests/integration/cli.py).

Every `bvh-ops` command a test runs is a real child process with its own pid, environment, working
directory, standard streams and exit status — but a fresh interpreter spends ~0.3 s of CPU
importing pydantic, psycopg, typer and our settings before it parses its first argument, and the
suite runs hundreds of them. This server imports those once and forks a child per command.

What is preloaded holds no state read from the environment at import (checked: the settings are
read when ``Settings()`` is built; the CLI's consoles, which read COLUMNS, NO_COLOR and the like,
are created by ``bvh_ops.cli.core``, which is *not* preloaded; Prefect, which reads its settings at
import, is never imported here — the server refuses to start if anything pulled it in).

Protocol (one Unix-socket connection per command): the client sends one JSON line
``{"argv": [...], "env": {...}, "cwd": "..."}`` with three file descriptors (stdin, stdout,
stderr); the server forks a waiter, which forks the command, answers ``{"pid": N}`` and, when the
command ends, ``{"status": S}`` (``os.waitpid``'s status). The server exits when its parent
(the pytest worker) is gone.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
import time

LOG = os.environ.get("BVH_TEST_CLI_LOG")
# Imported once, before any fork (each is environment-free at import; see the module docstring).
PRELOAD = (
    "pydantic", "pydantic_settings", "psycopg", "typer", "click", "rich.console", "rich.progress",
    "rich.table", "cryptography.hazmat.primitives.asymmetric.x25519", "zstandard",
    "bvh_ops.config", "bvh_ops.errors", "bvh_ops.keys", "bvh_ops.stream", "bvh_ops.repository.open",
)
# Never preloaded: modules whose import reads the environment.
NEVER = ("prefect", "bvh_ops.cli.core")


def _recv(conn: socket.socket) -> tuple[dict, list[int]]:
    data = b""
    fds: list[int] = []
    while not data.endswith(b"\n"):
        msg, ancdata, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
        if not msg:
            raise EOFError("client went away")
        data += msg
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(payload[: len(payload) - (len(payload) % arr.itemsize)])
                fds.extend(arr)
    return json.loads(data), fds


def _run_command(request: dict, fds: list[int]) -> None:
    """In the command's process: become `python -m bvh_ops.cli ARGS` and never return."""
    code = 1
    try:
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()  # TZ as the command's environment has it
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]
        sys.argv = ["bvh_ops/cli/__main__.py", *request["argv"]]
        import atexit
        import logging
        import runpy

        # Exit handlers run last-registered first. In a fresh interpreter the CLI registers its
        # final one (it ends the process) before anything imports logging, so logging's shutdown
        # runs before it; here logging came with the preloaded modules: register it again after.
        atexit.unregister(logging.shutdown)
        import bvh_ops.cli.app  # noqa: F401  (registers the CLI's last handler)

        atexit.register(logging.shutdown)
        interrupted = False
        try:
            runpy.run_module("bvh_ops.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException as exc:  # as the interpreter does with an uncaught exception
            sys.excepthook(*sys.exc_info())
            code = 1
            interrupted = isinstance(exc, KeyboardInterrupt)
        # What Py_Finalize does first: wait for the non-daemon threads, run the exit handlers
        # (the CLI's own last handler ends the process with its status).
        import threading

        threading._shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if interrupted:  # Python ends by SIGINT after an uncaught KeyboardInterrupt (exit -2)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(code)


def _waiter(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the waiter's process: fork the command, report its pid and then its status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_command(request, fds)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    except OSError:  # the caller went away; the command runs on, as a child of a killed caller would
        pass
    started = time.monotonic()
    _, status, usage = os.wait4(pid, 0)
    if LOG:  # what each command cost (a profiling aid: BVH_TEST_CLI_LOG=FILE)
        with open(LOG, "a") as f:
            f.write(json.dumps({"argv": request["argv"], "cpu": round(usage.ru_utime + usage.ru_stime, 3),
                                "wall": round(time.monotonic() - started, 3)}) + "\n")
    try:
        conn.sendall(json.dumps({"status": status}).encode() + b"\n")
    except OSError:
        pass
    os._exit(0)


def serve(path: str) -> None:
    sys.path[0] = os.getcwd()  # as `python -m` has it, not this file's directory (tests/flows is not flows)
    for name in PRELOAD:
        __import__(name)
    pulled = [m for m in NEVER if m in sys.modules]
    if pulled:
        raise SystemExit(f"zygote: preloading imported {', '.join(pulled)}; drop it from PRELOAD")
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(1.0)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        _accept_until_orphaned(listener, parent)
    finally:  # the worker is gone (or killed us): leave nothing in the temp directory
        listener.close()
        for leftover in (path, os.path.dirname(path)):
            try:
                (os.rmdir if leftover != path else os.unlink)(leftover)
            except OSError:
                pass


def _accept_until_orphaned(listener: socket.socket, parent: int) -> None:
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        try:
            request, fds = _recv(conn)
        except (OSError, EOFError, ValueError):
            conn.close()
            continue
        if os.fork() == 0:
            try:
                listener.close()
                _waiter(conn, request, fds)
            finally:  # never back into the server's loop (or its clean-up) in a waiter
                os._exit(1)
        conn.close()
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    serve(sys.argv[1])
