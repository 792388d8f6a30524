"""Work that should take only idle CPU (the drill's reads during the restore, issue #19 goal 3):
lower the CPU priority of a thread, of the children it starts, and of a local PostgreSQL
backend serving it; raise each back when that work must compete again.

Linux keeps the nice value and the scheduling policy per thread: ``lower()`` on a thread lowers
that thread only, and the children it starts afterwards inherit it. But with autogroups (the
default where processes sit in the root CPU cgroup, as on this project's machines) the kernel
first shares the CPU between sessions, and a nice value counts only against tasks of its own
session: a nice-19 psql of ours got as much CPU as the restore's server processes (a session of
their own), measured 216 vs 216 ticks in 4.5 s. So work that must take only idle CPU runs in a
session of its own whose autogroup is lowered too (``lower_group``); a session's autogroup nice
may be raised back to 0 by its owner without privileges. Lowering a process of
another OS user (a server's backend) needs root or that user's uid; raising a priority back
needs root (or an RLIMIT_NICE that allows it). Nothing here raises: where the kernel refuses,
the work runs at the priority it had."""

from __future__ import annotations

import errno
import os
import threading
import time
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
    group: int | None = None  # the autogroup's nice before lower_group (None: not lowered)


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


# Without CAP_SYS_ADMIN the kernel takes one autogroup change per 0.1 s, system-wide, and refuses
# the others with EAGAIN (kernel/sched/autogroup.c, proc_sched_autogroup_set_nice): two reads
# starting together, or two sessions raised back when the restore ends, would find the second
# refused. So a refused change is tried again once the 0.1 s have passed — for up to ~2 s: every
# change anywhere, a root process's too, starts the 0.1 s again (a suite's parallel drills made
# five tries too few).
GROUP_TRIES = 20


def _set_group(pid: int, nice: int) -> bool:
    for attempt in range(GROUP_TRIES):
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
            return True
        except OSError as exc:
            if exc.errno != errno.EAGAIN or attempt == GROUP_TRIES - 1:
                return False
            time.sleep(0.11)
    return False


def lower_group(pid: int) -> int | None:
    """Lower the autogroup of ``pid`` (a child started in a session of its own: everything in that
    session) to nice 19; returns its nice before, None where there is none or it was refused."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            before = int(f.read().rsplit("nice", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return before if _set_group(pid, NICE) else None


def restore(was: Was | None) -> bool:
    """Set back what ``lower`` (and ``lower_group``) changed. False where refused (unprivileged:
    a thread's nice; a session's autogroup goes back as long as it is not below 0) or the task
    is gone."""
    if was is None:
        return True
    group = was.group is None or _set_group(was.tid, was.group)  # the task's own priority is set back either way
    try:
        if os.sched_getscheduler(was.tid) != was.policy:
            os.sched_setscheduler(was.tid, was.policy, os.sched_param(0))
        os.setpriority(os.PRIO_PROCESS, was.tid, was.nice)
    except OSError:
        return False
    return group


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
