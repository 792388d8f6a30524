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
_OPEN_STATES = ("PENDING", "RUNNING", "CANCELLING")


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


def claim_and_reap(client: Any, flow_run_id: Any, flow_run_name: str | None = None) -> list[dict[str, str]]:
    """Label the run ``flow_run_id`` with this process as its owner, then set every open run
    (and its open task runs) whose owner is gone to CRASHED. Returns what it crashed."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    client.update_flow_run_labels(flow_run_id, owner_labels())
    open_types = [StateType(s) for s in _OPEN_STATES]
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_types))),
        limit=200)
    crashed = []
    for run in runs:
        labels = dict(run.labels or {})
        if str(run.id) == str(flow_run_id) or not owner_gone(labels):
            continue
        message = (f"its process is gone (pid {labels[LABEL_PID]} on {labels[LABEL_HOST]}: killed or lost "
                   f"while the run was {run.state_type.value}); marked crashed by flow run "
                   f"{flow_run_name or flow_run_id}")
        tasks = client.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[run.id]),
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=open_types))))
        for task_run in tasks:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        log.warning("flow run %s (%s): %s", run.name, run.id, message)
        crashed.append({"id": str(run.id), "name": run.name, "message": message})
    return crashed
