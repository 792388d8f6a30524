"""What every task shares: retry only transient errors, as often as the settings say."""

from __future__ import annotations

from typing import Any

from bvh_ops.errors import TransientError


def retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry connection refused / S3 5xx, never a permission error."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:  # noqa: BLE001 - anything else is final
        return False
    return False


def delete_on_rollback(txn: Any) -> None:
    """on_rollback hook of the backup tasks: a backup committed inside the flow's transaction
    whose checks then failed is deleted again (the task stored its id and the settings)."""
    from bvh_ops.logical.backup import delete_committed

    backup_id = txn.get("backup_id", None)
    settings = txn.get("settings", None)
    if backup_id and settings is not None:
        delete_committed(settings, backup_id)


def retrying(task: Any, settings: Any) -> Any:
    """``task`` with the configured retries (``task_retries``, ``retry_delay_seconds``): the one
    place that says how often a failure is retried; which failures are retried is each task's
    ``retry_condition_fn`` (transient ones only). Task decorators declare no retries of their own."""
    return task.with_options(retries=settings.task_retries, retry_delay_seconds=settings.retry_delay_seconds)
