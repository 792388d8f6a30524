"""Which physical backup to take: pure, over the kind asked for, the chain tip and two server facts."""

from __future__ import annotations

from dataclasses import dataclass

from bvh_ops.errors import BvhOpsError, ConfigError
from bvh_ops.repository.manifest import PHYSICAL_KINDS, Manifest

NATIVE_INCREMENTAL_SINCE = 170000  # server_version_num: pg_basebackup --incremental is PostgreSQL 17+


@dataclass(frozen=True)
class PhysicalPlan:
    kind: str  # full | incremental: what the new manifest records
    parent: Manifest | None  # the chain tip an incremental builds on (None for a full); a native
    # incremental builds on its files: native_parent(parent), which walks WAL-only increments back
    mode: str  # native (pg_basebackup) | wal-only (an increment of archived WAL, PostgreSQL < 17)
    promoted: bool  # an incremental was asked for, there was no chain: a full is taken instead


def plan_physical(kind: str, tip: Manifest | None, server_version_num: int, summarize_wal: str | None
                  ) -> PhysicalPlan:
    """``tip``: the newest trusted physical backup of this cluster (only looked at for an
    incremental). With none, an incremental becomes a full (as pgBackRest does); before
    PostgreSQL 17 it is a WAL-only increment; from 17 it needs summarize_wal = on."""
    if kind not in PHYSICAL_KINDS:
        raise BvhOpsError(f"unknown physical backup kind {kind!r}")
    if kind == "full":
        return PhysicalPlan("full", None, "native", promoted=False)
    if tip is None:
        return PhysicalPlan("full", None, "native", promoted=True)
    if server_version_num < NATIVE_INCREMENTAL_SINCE:
        return PhysicalPlan("incremental", tip, "wal-only", promoted=False)
    if summarize_wal != "on":
        raise ConfigError(
            "incremental backups need summarize_wal = on on the server: run ALTER SYSTEM SET summarize_wal "
            "= on; SELECT pg_reload_conf(); then take a full backup (summaries start from then)")
    return PhysicalPlan("incremental", tip, "native", promoted=False)
