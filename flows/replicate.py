"""Replicate (#17): keep the replica repository in step with the primary. Frequent and
lag-driven: a pass lists both repositories and copies only what is missing or stale (quick when
nothing is), and passes repeat while new commits keep arriving (at most ``max_passes``); then,
for ``follow_seconds``, WAL-only passes every ``poll_seconds`` keep the replica's WAL lag near
the poll interval until the next scheduled run. Never called from wal-push: archive_command
never waits on the replica."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from bvh_ops.config import load_settings
from bvh_ops.errors import BvhOpsError
from bvh_ops.units import human_bytes
from tasks.common import retrying
from tasks.replica_tasks import follow_wal_task, replicate_pass, report_replica


def replica_markdown(doc: dict[str, Any]) -> str:
    c, lag = doc["copied"], doc["lag_after"]
    lines = ["# Replication", "", "| | |", "|---|---|", f"| Primary | `{doc['primary']}` |",
             f"| Replica | `{doc['replica']}` |",
             f"| Copied | {c['units']} unit(s), {c['objects']} object(s), {human_bytes(c['bytes'])} "
             f"({c['server_side']} server-side) in {doc['seconds']} s |",
             f"| Lag now | {lag['objects']} object(s), {human_bytes(lag['bytes'])}, {lag['seconds']} s "
             f"(WAL {lag['wal_objects']}, {lag['wal_seconds']} s) |"]
    if doc["corrupt_recopied"]:
        lines.append(f"| Corrupt, re-copied | {', '.join(doc['corrupt_recopied'])} |")
    for f in doc["failures"]:
        lines.append(f"| FAILED | {f['unit']}: {f['error']} |")
    return "\n".join(lines) + "\n"


@flow(name="replicate", flow_run_name="replicate", retries=0, log_prints=False)
def replicate(verify: bool = False, max_passes: int = 3, follow_seconds: float = 0,
              poll_seconds: float = 15) -> dict[str, Any]:
    """Copy every committed unit the replica lacks, verified there; ``verify``: first hash every
    replica object and re-copy the corrupt ones (the weekly deployment); ``follow_seconds``:
    then follow the WAL that long (the 5-minute deployment: 270)."""
    settings = load_settings()
    logger = get_run_logger()
    if not settings.replica_repository:
        logger.info("replica_repository is not set: nothing to replicate")
        return {"configured": False}
    doc: dict[str, Any] = {}
    try:
        for n in range(max(1, max_passes)):
            doc = retrying(replicate_pass, settings)(settings, verify and n == 0)
            if not doc["lag_after"]["objects"] or doc["failures"]:
                break  # in step, or stuck on a unit the next run retries
        if follow_seconds > 0 and not doc["failures"]:
            doc["follow"] = retrying(follow_wal_task, settings)(settings, follow_seconds, poll_seconds)
            doc["failures"] += doc["follow"]["failures"]
    except BvhOpsError as exc:
        _findings(settings, None, str(exc))
        raise
    _findings(settings, doc)
    create_markdown_artifact(key="replicate", markdown=replica_markdown(doc), description="replication pass")
    logger.info("replicated %s object(s), %s; lag now %s object(s), %s s",
                doc["copied"]["objects"], human_bytes(doc["copied"]["bytes"]),
                doc["lag_after"]["objects"], doc["lag_after"]["seconds"])
    if doc["failures"]:
        raise BvhOpsError(f"{len(doc['failures'])} unit(s) could not be replicated: "
                          + "; ".join(f"{f['unit']}: {f['error']}" for f in doc["failures"][:3]))
    return doc


def _findings(settings, doc, error: str | None = None) -> None:
    try:
        report_replica(settings, doc, error)
    except BvhOpsError as exc:  # alerting is best effort here; the run's own state still says it
        get_run_logger().warning("replica findings not reported: %s", exc)


if __name__ == "__main__":
    replicate()
