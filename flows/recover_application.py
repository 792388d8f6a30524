"""Application recovery, on demand (#18): restore a file-set snapshot in place (``latest``,
``previous`` — the rollback — or an id), run the set's restart commands, probe until healthy;
each step's duration and the total against the runbook's 30-minute application RTO as the
``recover-application`` markdown artifact. A failed recovery fails its flow run (after the
artifact, which names the replaced files kept for undoing it)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from bvh_ops.config import load_settings
from bvh_ops.errors import ConfigError, IntegrityError
from bvh_ops.files.recover import recover_application, render_markdown


class RecoveryFailed(IntegrityError):
    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _run_name() -> str:
    p = flow_run.parameters or {}
    return f"recover-application {p.get('file_set', '?')} {p.get('snapshot', 'latest')}"


@task(name="recover", retries=0)
def recover_task(file_set: str | None, snapshot: str) -> dict[str, Any]:
    settings = load_settings()
    if file_set is None:
        apps = [fs.name for fs in settings.file_sets if fs.class_ == "application"]
        if len(apps) != 1:
            raise ConfigError(f"give file_set: {len(apps)} [[file_sets]] of class application "
                              f"({', '.join(apps) or 'none'})")
        file_set = apps[0]
    return recover_application(settings, file_set, snapshot).to_json()


@task(name="publish-report", retries=0)
def publish_task(report: dict[str, Any]) -> None:
    create_markdown_artifact(key="recover-application", markdown=render_markdown(report),
                             description=f"recovery of {report['set']}: {report['status']}, RTO {report['rto']['result']}")


@flow(name="recover-application", flow_run_name=_run_name, retries=0)
def recover_application_flow(file_set: str | None = None, snapshot: str = "previous") -> dict[str, Any]:
    """Restore ``file_set``'s ``snapshot`` in place, restart, verify health.

    Args:
        file_set: a [[file_sets]] name (default: the only one of class application).
        snapshot: "previous" (the one before the newest: roll back), "latest", or a snapshot id.
    """
    report = recover_task(file_set, snapshot)
    publish_task(report)
    logger = get_run_logger()
    for s in report["steps"]:
        logger.info("%s: %s in %.1f s: %s", s["name"], s["status"], s["seconds"], s["detail"])
    if report["status"] != "recovered":
        failed = next(s for s in report["steps"] if s["status"] != "ok")
        raise RecoveryFailed(f"recovery of {report['set']} failed at '{failed['name']}': {failed['detail']}"
                             + (f"; replaced files kept: {', '.join(report['replaced'])}" if report["replaced"] else ""),
                             report)
    return report


if __name__ == "__main__":
    recover_application_flow()
