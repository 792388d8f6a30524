"""WAL continuity and pruning over a synthetic archive (names, index entries, history files)."""

from __future__ import annotations

import json

from bvh_ops.pg.lsn import parse_segment, segment_name
from bvh_ops.repository.manifest import Manifest
from bvh_ops.storage.local import LocalStore
from bvh_ops.wal.archive import prune_wal, wal_continuity


def _base(start_lsn: str, timeline: int = 1) -> Manifest:
    return Manifest(backup_id="b", kind="full", tool_version="t", started_at="2026-01-01T00:00:00+00:00",
                    finished_at="2026-01-01T00:00:01+00:00", database="(cluster)", server_version="18",
                    server_version_num=180000, system_identifier="1", snapshot_id="", dump_format="tar",
                    compression="zstd-3", kem="x25519", key_ids=(), host="h",
                    extra={"start_lsn": start_lsn, "timeline": timeline, "wal_segment_size": 16 << 20})


def _put(store: LocalStore, name: str, *, index: bool = True, obj: bool = True, history: str | None = None) -> None:
    key = f"wal/{name[:8]}/{name}"
    if obj:
        store.put_bytes(key, b"x")
    if index:
        entry = {"name": name, "modified_at": "2026-01-01T00:00:00+00:00"}
        if history is not None:
            entry["history"] = history
        store.put_bytes(key + ".json", json.dumps(entry).encode())


def test_segment_names_round_trip():
    assert segment_name(1, 0x1FF) == "0000000100000001000000FF"
    assert parse_segment("0000000100000001000000FF") == (1, 0x1FF)
    assert parse_segment("00000002.history") is None


def test_gaps_and_index_without_object_are_missing(tmp_path):
    store = LocalStore(tmp_path)
    for segno in (2, 3, 5, 7):
        _put(store, segment_name(1, segno))
    _put(store, segment_name(1, 6), obj=False)  # wal-push died before its object: not committed
    report = wal_continuity(store, _base("0/2000028"))
    assert report.missing == [segment_name(1, 4), segment_name(1, 6)]
    assert report.contiguous_until == segment_name(1, 3)
    assert report.end_lsn == 4 * (16 << 20)
    assert report.last_segment == segment_name(1, 7) and report.found == 4


def test_continuity_follows_a_timeline_switch(tmp_path):
    store = LocalStore(tmp_path)
    for segno in (2, 3, 4):
        _put(store, segment_name(1, segno))
    _put(store, "00000002.history", history="1\t0/5000000\tbefore 2026-01-01\n")
    for segno in (5, 6):
        _put(store, segment_name(2, segno))
    report = wal_continuity(store, _base("0/2000028"))
    assert report.ok and report.timelines == [1, 2]
    assert report.last_segment == segment_name(2, 6) and report.found == 5
    # The old timeline's segment 5 is not expected once the cluster switched.
    _put(store, segment_name(1, 5))
    assert wal_continuity(store, _base("0/2000028")).found == 5


def test_prune_keeps_from_the_oldest_base_and_history(tmp_path):
    store = LocalStore(tmp_path)
    for segno in range(1, 7):
        _put(store, segment_name(1, segno))
    _put(store, "00000001.history", history="")
    removed = prune_wal(store, _base("0/4000028"))
    assert removed == [segment_name(1, s) for s in (1, 2, 3)]
    left = sorted(p.name for p in (tmp_path / "wal" / "00000001").iterdir())
    assert segment_name(1, 4) in left and "00000001.history" in left and segment_name(1, 3) not in left
