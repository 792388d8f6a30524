"""The first task of every bvh-ops flow: claim this run for this process and mark the runs of
processes that died mid-run (kill -9, OOM) CRASHED. Bookkeeping only: it never fails the flow."""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bvh_ops.orphans import LABEL_HOST, LABEL_PID, OPEN_STATES, owner_gone, owner_labels

log = logging.getLogger("tasks.orphans")


@task(name="reap-orphaned-runs", cache_policy=NO_CACHE, retries=0, timeout_seconds=120)
def reap_orphaned_runs() -> list[dict[str, str]]:
    """Label this flow run with its owner process; set open runs whose owner is gone CRASHED."""
    from prefect import get_client
    from prefect.runtime import flow_run

    logger = get_run_logger()
    try:
        with get_client(sync_client=True) as client:
            crashed = claim_and_reap(client, flow_run.id, flow_run.name)
    except Exception as exc:  # noqa: BLE001 - a backup matters more than the run history
        logger.warning("could not check for orphaned flow runs: %s", exc)
        return []
    for run in crashed:
        logger.warning("flow run %s marked crashed: %s", run["name"], run["message"])
    return crashed


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
    open_types = [StateType(s) for s in OPEN_STATES]
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
