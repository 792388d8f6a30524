"""Children die with their parent (PR_SET_PDEATHSIG), and orphaned runs are judged by their
owner labels: only a certainly dead owner on this host and PID namespace counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from bvh_ops import orphans
from bvh_ops.children import die_with_parent
from tests.waiting import wait_until

linux_only = pytest.mark.skipif(die_with_parent() is None, reason="PR_SET_PDEATHSIG is Linux-only")


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _alive_throughout(pid: int, seconds: float) -> bool:
    """Whether ``pid`` stays alive for ``seconds`` (an observation window, not a wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _dead(pid):
            return False
        time.sleep(0.02)
    return True


def _parent_with_sleeping_child(in_thread: bool) -> tuple[subprocess.Popen, int]:
    """A Python parent that starts `sleep 600` with die_with_parent (from its main thread or a
    thread that then ends) and prints the child's pid."""
    code = textwrap.dedent(f"""
        import subprocess, sys, threading, time
        from bvh_ops.children import die_with_parent
        box = []
        def start():
            box.append(subprocess.Popen(["sleep", "600"], preexec_fn=die_with_parent()))
        if {in_thread!r}:
            t = threading.Thread(target=start)
            t.start()
            t.join()
        else:
            start()
        print(box[0].pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return parent, int(parent.stdout.readline())


@linux_only
def test_child_is_killed_when_its_parent_is_killed_with_sigkill():
    parent, child = _parent_with_sleeping_child(in_thread=False)
    try:
        assert _alive_throughout(child, 0.3)  # alive while the parent is
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        wait_until(lambda: _dead(child), "the child to die with its parent")
    finally:
        parent.kill()
        parent.wait()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


@linux_only
def test_the_signal_follows_the_starting_thread_not_the_process():
    """Why spawn sites wait for their child on the thread that started it (bvh_ops.children)."""
    parent, child = _parent_with_sleeping_child(in_thread=True)
    try:
        wait_until(lambda: _dead(child), "the child to die when the thread that started it ends")
        assert parent.poll() is None
    finally:
        parent.kill()
        parent.wait()


def test_our_own_process_is_not_an_orphan():
    assert not orphans.owner_gone(orphans.owner_labels())


def test_a_dead_pid_or_a_reused_pid_is_gone():
    proc = subprocess.Popen(["true"])
    proc.wait()
    labels = orphans.owner_labels()
    assert orphans.owner_gone({**labels, orphans.LABEL_PID: str(proc.pid)})
    started = float(labels[orphans.LABEL_STARTED])
    assert orphans.owner_gone({**labels, orphans.LABEL_STARTED: f"{started - 3600:.2f}"})  # pid reused


def test_runs_this_host_cannot_judge_are_left_alone():
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = {**orphans.owner_labels(), orphans.LABEL_PID: str(proc.pid)}
    assert not orphans.owner_gone({**dead, orphans.LABEL_HOST: "another-host"})
    assert not orphans.owner_gone({**dead, orphans.LABEL_PIDNS: "pid:[1]"})
    assert not orphans.owner_gone({})  # no owner labels (an older version, or killed before its first task)
    assert not orphans.owner_gone({**dead, orphans.LABEL_PID: "not a pid"})
