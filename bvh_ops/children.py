"""Child processes die with bvh-ops, even with `kill -9`.

Mechanism: Linux's parent-death signal. Each child we start runs ``prctl(PR_SET_PDEATHSIG,
SIGKILL)`` between fork and exec (a ``preexec_fn``), so the kernel kills it when its parent goes,
whatever killed the parent. Nothing else covers SIGKILL: atexit handlers, signal handlers and
``finally`` blocks never run, process groups only help whoever signals the group, and a child
cannot watch a pipe it does not read.

Two caveats shape how this is used:

* The "parent" the kernel watches is the *thread* that forked the child, not the process
  (prctl(2)): the child is killed when that thread exits, even if the process lives on. Every
  spawn site in bvh_ops streams to or from its child and waits for it in the same call, on the
  same thread, so that thread always outlives the child; a helper that returned a running child
  to another thread and then ended would have its child killed. The ephemeral Prefect API server
  is different: Prefect starts it from whichever thread first needs the API (a log or event
  worker thread can be first), so :func:`start_prefect_api` starts it up front from the CLI's
  main thread, which lives as long as the process.
* A parent that dies between fork and prctl would be missed: the child checks afterwards that
  its parent is still the process that forked it and kills itself otherwise.

``preexec_fn`` makes subprocess fork instead of vfork/posix_spawn, and Python warns it is unsafe
with threads (the child runs Python code before exec). The child here only calls one foreign
function resolved in advance and ``os.getppid``/``os.kill``: no imports, locks or allocation of
note. Elsewhere than Linux (or without libc's prctl) :func:`die_with_parent` returns None and
children are started as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_SIGKILL = 9


def _resolve_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_prctl = _resolve_prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocess: the child gets SIGKILL when the thread that started it
    (see the module docstring) or the whole process dies. None where unsupported."""
    if _prctl is None:
        return None
    parent = os.getpid()
    prctl, getppid, kill, self_pid = _prctl, os.getppid, os.kill, os.getpid

    def _preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0)
        if getppid() != parent:  # the parent died before prctl: nobody will signal us
            kill(self_pid(), _SIGKILL)

    return _preexec


def start_prefect_api() -> str | None:
    """Start Prefect's ephemeral API server now, from the calling (main) thread, as a child that
    dies with this process. Call it once, before any flow runs; Prefect's own clients then reuse
    the same server (it is a per-process singleton). Returns its URL, or None when
    PREFECT_API_URL points at a real server (nothing to start)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    from prefect.server.api import server as server_module

    server = server_module.SubprocessASGIServer()
    if server.running:
        return server.api_url
    preexec = die_with_parent()
    original = getattr(server, "_run_uvicorn_command", None)
    real_subprocess = getattr(server_module, "subprocess", None)
    if preexec is not None and callable(original) and real_subprocess is not None:

        class _PopenDyingWithUs:
            """Prefect's ``subprocess`` as its server module sees it while it starts uvicorn:
            Popen gains our preexec_fn, everything else is the real module."""

            def __getattr__(self, name: str):
                return getattr(real_subprocess, name)

            @staticmethod
            def Popen(*args, **kwargs):  # noqa: N802 - stands in for subprocess.Popen
                kwargs.setdefault("preexec_fn", preexec)
                return real_subprocess.Popen(*args, **kwargs)

        def run_uvicorn():
            server_module.subprocess = _PopenDyingWithUs()
            try:
                return original()
            finally:
                server_module.subprocess = real_subprocess

        # An instance attribute: also used when Prefect retries on another port.
        server._run_uvicorn_command = run_uvicorn
    else:
        log.warning("the ephemeral Prefect API server will not die with this process (no PR_SET_PDEATHSIG "
                    "or an unknown Prefect version)")
    server.start()
    return server.api_url
