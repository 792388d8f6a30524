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
