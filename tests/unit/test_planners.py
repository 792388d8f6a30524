"""The planners behind every deletion and every physical backup: pure, table-driven, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.errors import BvhOpsError, ConfigError
from bvh_ops.expire import plan_expire
from bvh_ops.pg.lsn import segment_name
from bvh_ops.pg.physinfo import oldest_base
from bvh_ops.physical.plan import plan_physical
from bvh_ops.repository.gfs import Policy
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.repo import BackupRecord
from bvh_ops.wal.archive import plan_wal_prune

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def make_manifest(backup_id: str, *, kind: str = "full", start_lsn: str | None = "0/4000028", timeline: int = 1,
                  age_days: float = 0, mode: str = "native", parent: str | None = None, **extra) -> Manifest:
    finished = (NOW - timedelta(days=age_days)).isoformat()
    return Manifest(backup_id=backup_id, kind=kind, tool_version="t", started_at=finished, finished_at=finished,
                    database="(cluster)", server_version="18", server_version_num=180000, system_identifier="1",
                    snapshot_id="", dump_format="tar", compression="zstd-3", kem="x25519", key_ids=(), host="h",
                    parent_id=parent,
                    extra={"start_lsn": start_lsn, "timeline": timeline, "mode": mode, **extra})


def make_backup_record(m: Manifest, *, signature_ok: bool = True) -> BackupRecord:
    finished = datetime.fromisoformat(m.finished_at)
    return BackupRecord(m.backup_id, m.kind, "complete", finished, finished, m.parent_id, signature_ok=signature_ok)


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


# -- which WAL goes -------------------------------------------------------------------------

def seg(tl: int, segno: int) -> str:
    return segment_name(tl, segno)


@pytest.mark.parametrize(
    "listing, base, pruned",
    [
        # Below the base's start segment (4) on its timeline goes; from it on stays.
        ([seg(1, n) for n in range(1, 7)], make_manifest("b", start_lsn="0/4000028"), [seg(1, 1), seg(1, 2), seg(1, 3)]),
        # The start LSN exactly on a segment boundary: that segment is the first kept.
        ([seg(1, 3), seg(1, 4)], make_manifest("b", start_lsn="0/4000000"), [seg(1, 3)]),
        # History files always stay; .backup and .partial files go with their segment.
        ([seg(1, 2), "00000002.history", seg(1, 2) + ".00000028.backup", seg(1, 3) + ".partial", seg(1, 5)],
         make_manifest("b", start_lsn="0/5000028", timeline=2),
         [seg(1, 2), seg(1, 2) + ".00000028.backup", seg(1, 3) + ".partial"]),
        # Earlier timelines go below the start segment; later timelines are never touched.
        ([seg(1, 2), seg(2, 2), seg(3, 2), seg(2, 6)], make_manifest("b", start_lsn="0/5000028", timeline=2),
         [seg(1, 2), seg(2, 2)]),
        # Names that are not WAL are left alone.
        (["README", "00000001.history", ".tmp-upload"], make_manifest("b", start_lsn="0/5000028"), []),
        # A 64 MiB segment size shifts which name holds the start LSN (0/C000000 is segment 3).
        ([segment_name(1, n, 64 << 20) for n in range(1, 5)],
         make_manifest("b", start_lsn="0/C000028", wal_segment_size=64 << 20),
         [segment_name(1, 1, 64 << 20), segment_name(1, 2, 64 << 20)]),
        ([], make_manifest("b"), []),
    ],
)
def test_plan_wal_prune(listing, base, pruned):
    assert plan_wal_prune(listing, base) == pruned


# -- which base WAL is kept from ------------------------------------------------------------

# Two overlapping fulls on one timeline: "early" started first (lower start LSN) but finished
# after "late". WAL must be kept from early's start: ordering by finished_at would keep it from
# late's and prune segments 3 and 4, which a restore of "early" replays.
EARLY = make_manifest("early", start_lsn="0/3000028", age_days=0.9)
LATE = make_manifest("late", start_lsn="0/5000028", age_days=1.0)


def test_oldest_base_is_by_start_lsn_not_by_finish_time():
    by_finish_time = min([EARLY, LATE], key=lambda m: (m.extra["timeline"], m.finished_at))
    assert by_finish_time is LATE  # the order expire used to take
    assert oldest_base([EARLY, LATE]) is EARLY
    pruned = plan_wal_prune([seg(1, n) for n in range(1, 7)], oldest_base([LATE, EARLY]))
    assert pruned == [seg(1, 1), seg(1, 2)]


@pytest.mark.parametrize(
    "manifests, expected",
    [
        ([], None),
        ([make_manifest("a", start_lsn=None)], None),  # pg_basebackup's output not understood: no anchor
        ([make_manifest("i", kind="incremental", start_lsn="0/1000000")], None),  # only fulls anchor WAL
        ([make_manifest("t2", start_lsn="0/1000000", timeline=2), make_manifest("t1", start_lsn="0/9000000")], "t1"),
        ([make_manifest("a", start_lsn="0/10000000"), make_manifest("b", start_lsn="0/9000000")], "b"),  # not as text
        ([EARLY, LATE, make_manifest("i", kind="incremental", start_lsn="0/1000000")], "early"),
    ],
)
def test_oldest_base(manifests, expected):
    base = oldest_base(manifests)
    assert (base.backup_id if base else None) == expected


# -- retention carried out: what goes ------------------------------------------------------

OLD_FULL = make_manifest("old-full", start_lsn="0/2000028", age_days=40)
OLD_INCR = make_manifest("old-incr", kind="incremental", start_lsn="0/3000028", age_days=39, parent="old-full")
NEW_FULL = make_manifest("new-full", start_lsn="0/5000028", age_days=2)
NEW_INCR = make_manifest("new-incr", kind="incremental", start_lsn="0/6000028", age_days=1, parent="new-full")
ARCHIVE = [seg(1, n) for n in range(1, 8)]


def daily(n: int, min_redundancy: int = 1, **kw) -> Policy:
    """GFS with the daily rule only (and what ``kw`` adds): the old keep-N-days tables."""
    return Policy(**{"keep_daily": n, "keep_weekly": 0, "keep_monthly": 0, "keep_yearly": 0,
                     "min_redundancy": min_redundancy, **kw})


@pytest.mark.parametrize(
    "manifests, policy, untrusted, obsolete, kept_from, pruned",
    [
        # The old chain goes (2 daily = the two newest days with a backup); WAL kept from the newest full's start.
        ([OLD_FULL, OLD_INCR, NEW_FULL, NEW_INCR], daily(2), set(), {"old-full", "old-incr"}, "0/5000028",
         [seg(1, n) for n in (1, 2, 3, 4)]),
        # An incremental kept by redundancy keeps its full, and WAL from that full on.
        ([OLD_FULL, OLD_INCR], daily(0), set(), set(), "0/2000028", [seg(1, 1)]),
        # Everything kept: nothing goes, WAL kept from the oldest full.
        ([OLD_FULL, NEW_FULL], daily(60), set(), set(), "0/2000028", [seg(1, 1)]),
        # Only an untrusted full: not counted, not deleted, anchors no WAL (nothing pruned).
        ([OLD_FULL], daily(30), {"old-full"}, set(), None, []),
        # Overlapping fulls, both kept: WAL from the lower start LSN, whatever finished first.
        ([EARLY, LATE], daily(30, 2), set(), set(), "0/3000028", [seg(1, 1), seg(1, 2)]),
        # GFS: an old full kept by the monthly rule keeps its own start..stop WAL, not all WAL since.
        ([make_manifest("old-full", start_lsn="0/2000028", stop_lsn="0/3000100", age_days=40), NEW_FULL],
         daily(1, keep_monthly=2), set(), set(), "0/5000028", [seg(1, 1), seg(1, 4)]),
        # An old full kept by the monthly rule that records no stop LSN: WAL kept from it on (as before GFS).
        ([OLD_FULL, NEW_FULL], daily(1, keep_monthly=2), set(), set(), "0/2000028", [seg(1, 1)]),
        # ... and when it goes, so does its WAL.
        ([make_manifest("old-full", start_lsn="0/2000028", stop_lsn="0/3000100", age_days=40), NEW_FULL],
         daily(1), set(), {"old-full"}, "0/5000028", [seg(1, n) for n in (1, 2, 3, 4)]),
    ],
)
def test_plan_expire(manifests, policy, untrusted, obsolete, kept_from, pruned):
    records = [make_backup_record(m, signature_ok=m.backup_id not in untrusted) for m in manifests]
    trusted_fulls = {m.backup_id: m for m in manifests if m.kind == "full" and m.backup_id not in untrusted}
    plan = plan_expire(records, trusted_fulls, ARCHIVE, now=NOW, policy=policy)
    assert {d.id for d in plan.delete} == obsolete
    assert plan.wal_kept_from == kept_from
    assert list(plan.wal_prune) == pruned
    doc = plan.to_json()
    assert set(doc) == {"decisions", "wal_pruned", "wal_kept_from", "wal_ranges"}
    assert doc["wal_pruned"] == len(pruned) and doc["wal_kept_from"] == kept_from
    assert {d["backup_id"] for d in doc["decisions"] if d["action"] == "UNTRUSTED"} == untrusted


def test_a_locked_backup_due_for_deletion_is_held_and_keeps_its_wal():
    records = [make_backup_record(m) for m in (OLD_FULL, NEW_FULL)]
    until = NOW + timedelta(days=5)
    plan = plan_expire(records, {"old-full": OLD_FULL, "new-full": NEW_FULL}, ARCHIVE, now=NOW, policy=daily(1),
                       locks={"old-full": until})
    assert plan.delete == [] and [d.id for d in plan.held] == ["old-full"]
    # It records no stop LSN, so its WAL is kept from its start on.
    assert plan.held[0].held_until == until and plan.wal_base is OLD_FULL


def test_a_held_full_keeps_its_own_wal_range():
    old = make_manifest("old-full", start_lsn="0/2000028", stop_lsn="0/3000100", age_days=40)
    records = [make_backup_record(m) for m in (old, NEW_FULL)]
    plan = plan_expire(records, {"old-full": old, "new-full": NEW_FULL}, ARCHIVE, now=NOW, policy=daily(1),
                       locks={"old-full": NOW + timedelta(days=5)})
    assert [d.id for d in plan.held] == ["old-full"] and list(plan.wal_prune) == [seg(1, 1), seg(1, 4)]


def test_an_obsolete_full_anchors_no_wal():
    """Its manifest is at hand, but it is going: WAL is kept from the kept full only."""
    records = [make_backup_record(m) for m in (OLD_FULL, NEW_FULL)]
    plan = plan_expire(records, {"old-full": OLD_FULL, "new-full": NEW_FULL}, ARCHIVE, now=NOW, policy=daily(1))
    assert [d.id for d in plan.delete] == ["old-full"]
    assert [m.backup_id for m in plan.kept_bases] == ["new-full"] and plan.wal_base is NEW_FULL
