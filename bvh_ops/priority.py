"""Work that should take only idle CPU (the drill's reads during the restore, issue #19 goal 3):
lower the CPU priority of a thread, of the children it starts, and of a local PostgreSQL
backend serving it; raise each back when that work must compete again.

Linux keeps the nice value and the scheduling policy per thread: ``lower()`` on a thread lowers
that thread only, and the children it starts afterwards inherit it. Lowering a process of
another OS user (a server's backend) needs root or that user's uid; raising a priority back
needs root (or an RLIMIT_NICE that allows it). Nothing here raises: where the kernel refuses,
the work runs at the priority it had."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

NICE = 19  # the lowest: a nice-0 task on the same core gets ~98.5 % of it
# "nice": nice 19; "idle": SCHED_IDLE (only CPU nothing else wants); "normal": left as it is.
POLICY = "nice"


@dataclass(frozen=True)
class Was:
    """A thread or process's priority before ``lower``: what ``restore`` sets back."""

    tid: int
    policy: int
    nice: int


def lower(tid: int | None = None, policy: str | None = None) -> Was | None:
    """Lower ``tid`` (a thread or process id; default the calling thread). None: not lowered."""
    policy = policy or POLICY
    tid = tid or threading.get_native_id()
    if policy == "normal":
        return None
    try:
        was = Was(tid, os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid))
        if policy == "idle":
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        else:
            os.setpriority(os.PRIO_PROCESS, tid, NICE)
    except (OSError, AttributeError):  # not permitted, gone, or not Linux
        return None
    return was


def restore(was: Was | None) -> bool:
    """Set back what ``lower`` changed. False where refused (unprivileged) or the task is gone."""
    if was is None:
        return True
    try:
        if os.sched_getscheduler(was.tid) != was.policy:
            os.sched_setscheduler(was.tid, was.policy, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, was.tid, was.nice)
    except OSError:
        return False
    return True


def local_backend(pid: int, port: int | None) -> bool:
    """Whether process ``pid`` here is the PostgreSQL backend of our connection: its title is a
    backend's and, over TCP, names our client port (a server elsewhere — another host, another
    container — may have a backend with the same pid as some process here)."""
    try:
        title = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0]
    except OSError:
        return False
    if not title.startswith(b"postgres: "):
        return False
    return not port or f"({port})".encode() in title
