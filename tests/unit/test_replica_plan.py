"""The replication planner: commit order, what is missing or changed, lag with an injected now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.replica.plan import Obj, group_units, lag, lag_since, plan

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
B = "backups/20261128T020000Z-logical-abcdef"
W = "wal/00000001/000000010000000000000003"


def o(key: str, minutes: float = 0, size: int = 10) -> Obj:
    return Obj(key, size, T0 + timedelta(minutes=minutes))


def primary() -> list[Obj]:
    return [
        o(f"{B}/manifest.json", 3), o(f"{B}/manifest.json.copy", 3), o(f"{B}/dump.pgcustom", 1, 1000),
        o(f"{W}.json", 5), o(W, 5, 500),
        o("logs/app/2026/11/app-20261127.jsonl.zst.enc", 6, 70), o("logs/app/2026/11/app-20261127.jsonl.zst.enc.json", 6),
        o("audit/digests/000000000001.json", 7),
        o("files/content/ab/abcd", 8, 40), o("files/keys/content-1.enc", 8),
        o("files/snapshots/s1/snapshot.json", 9), o("files/snapshots/s1/snapshot.json.copy", 9),
        o("files/snapshots/s1/entries.jsonl.enc", 8.5), o("files/snapshots/s1/refs.txt", 8.5),
    ]


def keys(p) -> list[str]:
    return [s.key for w in p.work for s in w.steps]


def test_every_unit_is_copied_data_first_commit_point_last():
    order = keys(plan(primary(), []))
    assert order[:2] == [W, f"{W}.json"]  # WAL first: the RPO rides on it
    assert order[2:5] == [f"{B}/dump.pgcustom", f"{B}/manifest.json.copy", f"{B}/manifest.json"]
    snap = [k for k in order if k.startswith("files/snapshots/")]
    assert snap[-2:] == ["files/snapshots/s1/snapshot.json.copy", "files/snapshots/s1/snapshot.json"]
    assert order.index("files/content/ab/abcd") < order.index("files/snapshots/s1/entries.jsonl.enc")
    log = "logs/app/2026/11/app-20261127.jsonl.zst.enc"
    assert order.index(log) + 1 == order.index(log + ".json")
    assert "audit/digests/000000000001.json" in order
    assert len(order) == len(primary())


@pytest.mark.parametrize("uncommitted", [
    [o("backups/20261128T030000Z-full-000001/inprogress.json"), o("backups/20261128T030000Z-full-000001/base.tar")],
    [o("wal/00000001/000000010000000000000004")],                      # pushed, index not written yet
    [o("wal/00000001/000000010000000000000004@0123456789abcdef")],     # the same, under an alternate key
    [o("files/snapshots/s2/inprogress.json"), o("files/snapshots/s2/refs.txt")],
    [o("archive/2026-11/x/inprogress.json"), o("archive/2026-11/x/dump")],
])
def test_uncommitted_units_are_never_replicated(uncommitted):
    p = plan(primary() + uncommitted, [])
    assert not {u.key for u in uncommitted} & set(keys(p))
    assert p.skipped


def test_a_wal_files_alternate_objects_travel_with_its_entry_before_it():
    """An upload that found its key taken stored its object under ``<key>@<16 hex>``: the entry
    (the commit point) is copied after every object of its name, whichever one it names."""
    alt = f"{W}@0123456789abcdef"
    order = keys(plan([o(W, 5, 500), o(alt, 6, 480), o(f"{W}.json", 6)], []))
    assert order == [W, alt, f"{W}.json"]
    only_alt = keys(plan([o(alt, 6, 480), o(f"{W}.json", 6)], []))
    assert only_alt == [alt, f"{W}.json"]


def test_markers_and_temporary_uploads_are_not_copied():
    extra = [o(f"{B}/inprogress.json"), o("wal/00000001/.tmp-000000010000000000000005.ab12"), o("files/gc.lock")]
    assert not {e.key for e in extra} & set(keys(plan(primary() + extra, [])))


def test_a_replica_in_step_needs_nothing_and_has_no_lag():
    replica = [Obj(x.key, x.size, x.modified + timedelta(seconds=30)) for x in primary()]
    p = plan(primary(), replica)
    assert p.work == ()
    assert lag(p, T0 + timedelta(days=1)).seconds == 0


def test_an_interrupted_run_resumes_with_the_commit_points():
    replica = [o(f"{B}/dump.pgcustom", 2, 1000)]
    p = plan(primary(), replica)
    assert [s.key for w in p.work if w.unit.name == B for s in w.steps] == [f"{B}/manifest.json.copy",
                                                                            f"{B}/manifest.json"]


@pytest.mark.parametrize(("replica_obj", "reason"), [
    (o(f"{B}/manifest.json", 4, size=11), "size"),          # rewritten with another size
    (o(f"{B}/manifest.json", 2), "rewritten"),               # same size, but the primary's is newer
])
def test_a_rewritten_manifest_is_copied_again_copy_first(replica_obj, reason):
    replica = [Obj(x.key, x.size, x.modified + timedelta(seconds=30)) for x in primary() if x.key != replica_obj.key]
    p = plan(primary(), [*replica, replica_obj])
    (w,) = p.work
    assert [(s.key, s.reason) for s in w.steps] == [(f"{B}/manifest.json", reason)]
    # a rotation that rewrote both: the copy goes first, the main manifest last
    both = [x for x in replica if not x.key.endswith("manifest.json.copy")] + [replica_obj,
                                                                               o(f"{B}/manifest.json.copy", 2)]
    assert keys(plan(primary(), both)) == [f"{B}/manifest.json.copy", f"{B}/manifest.json"]


def test_a_corrupt_object_reported_by_verify_is_copied_again():
    replica = [Obj(x.key, x.size, x.modified + timedelta(seconds=30)) for x in primary()]
    p = plan(primary(), replica, corrupt=[f"{B}/dump.pgcustom"])
    assert [(s.key, s.reason) for w in p.work for s in w.steps] == [(f"{B}/dump.pgcustom", "corrupt")]


def test_objects_only_on_the_replica_are_never_deleted():
    p = plan(primary(), [o("backups/20261001T020000Z-logical-000000/manifest.json")])
    assert all(s.reason != "delete" for w in p.work for s in w.steps)
    assert "backups/20261001T020000Z-logical-000000/manifest.json" not in keys(p)


def test_lag_counts_objects_bytes_and_the_age_of_the_oldest_commit():
    replica = [Obj(x.key, x.size, x.modified + timedelta(seconds=30)) for x in primary()
               if not x.key.startswith(("wal/", B))]
    now = T0 + timedelta(minutes=20)
    got = lag(plan(primary(), replica), now)
    assert (got.objects, got.bytes) == (5, 500 + 10 + 1000 + 10 + 10)
    assert got.seconds == 17 * 60           # the backup's manifest, committed at +3 min
    assert got.oldest == B
    assert (got.wal_objects, got.wal_seconds) == (2, 15 * 60)


def test_lag_without_wal_pending_reports_zero_wal_seconds():
    replica = [Obj(x.key, x.size, x.modified + timedelta(seconds=30)) for x in primary() if x.key.startswith("wal/")]
    got = lag(plan(primary(), replica), T0 + timedelta(hours=1))
    assert got.wal_objects == 0 and got.wal_seconds == 0 and got.objects > 0


def test_lag_estimate_while_the_replica_is_unreachable_grows_with_the_outage():
    caught_up = T0 + timedelta(minutes=4)   # the backup was in step; the WAL after it was not
    first = lag_since(primary(), caught_up, T0 + timedelta(minutes=10))
    later = lag_since(primary(), caught_up, T0 + timedelta(minutes=40))
    assert first.wal_objects == 2 and first.wal_seconds == 5 * 60
    assert later.wal_seconds == 35 * 60 and later.objects == first.objects
    assert lag_since(primary(), None, T0 + timedelta(minutes=10)).objects == len(primary())


def test_units_sort_wal_before_backups_and_content_before_snapshots():
    kinds = [u.kind for u in group_units(primary())[0]]
    assert kinds == sorted(kinds, key=["wal", "backup", "files-content", "files-snapshot", "log", "audit",
                                       "other"].index)
