"""Key rotation, on demand (#17): re-seal every data key to the configured recipients + ``add``
- ``remove`` without re-encrypting (format 3; format-2 objects are re-encrypted), crash-safe and
resumable (run it again after a failure). ``dry_run`` (the default) only lists what would change.
The report is the ``key-rotation`` markdown artifact; a run with failures, or with items still
sealed to a removed key, fails."""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from bvh_ops.config import load_settings
from bvh_ops.errors import IntegrityError


def _run_name() -> str:
    p = flow_run.parameters or {}
    return "key-rotation " + ("dry-run" if p.get("dry_run", True) else "apply")


@task(name="rotate-keys", retries=0, timeout_seconds=24 * 3600)
def rotate_task(add: list[str], remove: list[str], dry_run: bool, replica: bool) -> dict[str, Any]:
    from pathlib import Path

    from bvh_ops.rotation.run import rotate

    settings = load_settings()
    report = rotate(settings.for_replica() if replica else settings, add=[Path(a) for a in add], remove=list(remove),
                    dry_run=dry_run)
    return {**report.to_json(), "text": report.render()}


@task(name="publish-report", retries=0)
def publish_task(report: dict[str, Any]) -> None:
    create_markdown_artifact(key="key-rotation", markdown="```\n" + report["text"] + "\n```",
                             description="key rotation " + ("(dry run)" if report["dry_run"] else "")
                             + ("ok" if report["ok"] else "INCOMPLETE"))


@flow(name="key-rotation", flow_run_name=_run_name, retries=0)
def key_rotation(add: list[str] | None = None, remove: list[str] | None = None, dry_run: bool = True,
                 replica: bool = False) -> dict[str, Any]:
    """Rotate the recipients every data key is sealed to.

    Args:
        add: recipient.pub files (paths on the worker) to add.
        remove: key ids or recipient.pub files to remove (remove them from `recipients` first).
        dry_run: list what would change without changing anything.
        replica: rotate the replica repository (replica_repository) instead of the primary.
    """
    report = rotate_task(add or [], remove or [], dry_run, replica)
    publish_task(report)
    if not report["ok"]:
        raise IntegrityError(f"key rotation incomplete: {len(report['failed'])} failed, {len(report['left'])} left "
                             "sealed to a removed key; run it again (it resumes) after fixing what the report names")
    return report


if __name__ == "__main__":
    key_rotation()
