"""The first task of every bvh-ops flow: claim this run for this process and mark the runs of
processes that died mid-run (kill -9, OOM) CRASHED. Bookkeeping only: it never fails the flow."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE


@task(name="reap-orphaned-runs", cache_policy=NO_CACHE, retries=0, timeout_seconds=120)
def reap_orphaned_runs() -> list[dict[str, str]]:
    """Label this flow run with its owner process; set open runs whose owner is gone CRASHED."""
    from prefect import get_client
    from prefect.runtime import flow_run

    from bvh_ops.orphans import claim_and_reap

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
