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
  worker thread can be first), so :func:`bvh_ops.cli.prefect_api.start_prefect_api` starts it up front from the CLI's
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


