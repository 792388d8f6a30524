"""The planners behind every deletion and every physical backup: pure, table-driven, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.errors import BvhOpsError, ConfigError
from bvh_ops.physical.plan import plan_physical
from bvh_ops.repository.manifest import Manifest

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def make_manifest(backup_id: str, *, kind: str = "full", start_lsn: str | None = "0/4000028", timeline: int = 1,
                  age_days: float = 0, mode: str = "native", parent: str | None = None, **extra) -> Manifest:
    finished = (NOW - timedelta(days=age_days)).isoformat()
    return Manifest(backup_id=backup_id, kind=kind, tool_version="t", started_at=finished, finished_at=finished,
                    database="(cluster)", server_version="18", server_version_num=180000, system_identifier="1",
                    snapshot_id="", dump_format="tar", compression="zstd-3", kem="x25519", key_ids=(), host="h",
                    parent_id=parent,
                    extra={"start_lsn": start_lsn, "timeline": timeline, "mode": mode, **extra})


# -- which physical backup to take ---------------------------------------------------------

TIP = make_manifest("tip")


@pytest.mark.parametrize(
    "kind, tip, version, summarize, expected",
    [
        # kind asked, chain tip, server_version_num, summarize_wal -> (kind, parent, mode, promoted)
        ("full", None, 180000, "off", ("full", None, "native", False)),
        ("full", TIP, 150000, "off", ("full", None, "native", False)),  # a full never looks at the chain
        ("incremental", None, 180000, "on", ("full", None, "native", True)),  # no chain yet: promoted
        ("incremental", None, 150000, "off", ("full", None, "native", True)),
        ("incremental", TIP, 170000, "on", ("incremental", "tip", "native", False)),
        ("incremental", TIP, 169999, "on", ("incremental", "tip", "wal-only", False)),  # before 17: WAL only
        ("incremental", TIP, 150000, "off", ("incremental", "tip", "wal-only", False)),  # needs no summaries
    ],
)
def test_plan_physical(kind, tip, version, summarize, expected):
    plan = plan_physical(kind, tip, version, summarize)
    assert (plan.kind, plan.parent.backup_id if plan.parent else None, plan.mode, plan.promoted) == expected


@pytest.mark.parametrize("summarize", ["off", None])
def test_native_incremental_needs_wal_summaries(summarize):
    with pytest.raises(ConfigError, match="summarize_wal = on"):
        plan_physical("incremental", TIP, 170000, summarize)


def test_unknown_physical_kind():
    with pytest.raises(BvhOpsError, match="unknown physical backup kind"):
        plan_physical("differential", None, 180000, "on")
