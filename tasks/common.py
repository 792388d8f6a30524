"""What every task shares: retry only transient errors."""

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
