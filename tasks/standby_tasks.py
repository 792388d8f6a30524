"""Tasks of the failover drill: each stage one task with its own timeout, thin over
bvh_ops.standby."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from bvh_ops.config import Settings
from bvh_ops.standby import failover as fo
from bvh_ops.standby import standby as sb
from tasks.common import retry_transient_only

_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_condition_fn": retry_transient_only}


@task(name="failover-drill-standby", timeout_seconds=6 * 3600, **_opts)
def create_standby(settings: Settings, data: Path, source: str, backup: str) -> dict:
    """A warm standby from ``source`` (replica or primary), started; it never archives (a drill
    must not write a timeline into the repository)."""
    return sb.create_standby(settings, data, source=source, backup=backup, start=True, archive=False,
                             timeout=settings.rto_objective_seconds * 4)


@task(name="failover-drill-catch-up", timeout_seconds=3600, **_opts)
def catch_up(settings: Settings, data: Path, timeout: float) -> dict:
    """Let it replay what the repository holds; returns its last status."""
    return fo.wait_caught_up(settings, data, timeout=timeout, clock=lambda: datetime.now(UTC))


@task(name="failover-drill-promote", timeout_seconds=1800, **_opts)
def promote(settings: Settings, data: Path) -> dict:
    """Promote with the failover's checks (drill mode: no fence, no archiving); a standby behind
    the RPO objective is promoted anyway and the lag check fails."""
    return fo.failover(settings, data, force=True, drill=True, catch_up_timeout=0)


@task(name="failover-drill-teardown", timeout_seconds=600, cache_policy=NO_CACHE)
def teardown(data: Path, root: Path) -> None:
    sb.remove_standby(data)
    shutil.rmtree(root, ignore_errors=True)
