"""Flow runs whose process died without a word (`kill -9`, the OOM killer, a lost host) stay
RUNNING for ever: nobody is left to report their end, and with the ephemeral API there is no
server-side heartbeat watch either. Each bvh-ops flow labels its own run with its owner (host,
PID namespace, pid and the process's start time); a flow starting later on the same host marks
the runs whose owner is gone CRASHED, naming the dead pid.

Only runs this host can judge are touched: same host name *and* same PID namespace (another
container may reuse our host name and pids), owner pid absent, a zombie, or a different process
(start time differs: the pid was reused). Runs without these labels (killed before their first
task, or taken by an older version) are left alone.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import psutil

log = logging.getLogger(__name__)

LABEL_HOST = "bvh-ops.host"
LABEL_PIDNS = "bvh-ops.pidns"
LABEL_PID = "bvh-ops.pid"
LABEL_STARTED = "bvh-ops.pid-started"
OPEN_STATES = ("PENDING", "RUNNING", "CANCELLING")


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def owner_labels() -> dict[str, str]:
    """Who runs this process: the labels a flow puts on its own run."""
    return {LABEL_HOST: socket.gethostname(), LABEL_PIDNS: _pid_namespace(), LABEL_PID: str(os.getpid()),
            LABEL_STARTED: f"{psutil.Process().create_time():.2f}"}


def owner_gone(labels: dict[str, Any]) -> bool:
    """True only when the run's owner process is certainly gone (see the module docstring)."""
    try:
        pid = int(labels[LABEL_PID])
        started = float(labels[LABEL_STARTED])
    except (KeyError, TypeError, ValueError):
        return False
    if labels.get(LABEL_HOST) != socket.gethostname() or labels.get(LABEL_PIDNS, "") != _pid_namespace():
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        return abs(proc.create_time() - started) > 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # access denied and the like: it exists
        return False


