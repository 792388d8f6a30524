"""Tasks of log collection: one per source, so a source whose files cannot be read, or a retry
after the ops database went away, touches only that source."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bvh_ops.config import Settings
from bvh_ops.logs.collect import collect_configured
from tasks.common import retry_transient_only


@task(name="collect-log-source", task_run_name="collect-log-source {name}", cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient_only, timeout_seconds=1800)
def collect_log_source(settings: Settings, name: str) -> dict[str, Any]:
    """Read one source on from its stored offsets into the ops database (records and offsets
    commit together: a retry re-reads only what was not committed)."""
    result = collect_configured(settings, [name])
    doc = result.to_json()
    src = doc["sources"][0]
    logger = get_run_logger()
    for line in src["messages"]:
        logger.warning("%s: %s", name, line)
    logger.info("%s: %d records from %d files (%d bytes), %d quarantined", name, src["records"], src["files"],
                src["bytes"], src["quarantined"])
    return src
