"""Which timelines a recovery from a base backup follows (bvh_ops.wal.archive.timeline_path): the
newest timeline descending from the base's, through each switch recorded in the archived
.history files, as recovery_target_timeline = 'latest' does. Pure: the archive is a table of
names and the store an in-memory double of our ObjectStore protocol (only get_bytes is read)."""

from __future__ import annotations

import json

import pytest

from bvh_ops.errors import NotFound
from bvh_ops.wal.archive import ArchivedFile, timeline_path

SEG = 16 << 20


class HistoryIndex:
    """The index entries of archived history files, by key (what wal-push writes to wal/<tl>/)."""

    url = "memory://"

    def __init__(self, histories: dict[int, str | None]):
        self.objects = {}
        for tl, text in histories.items():
            entry = {"name": f"{tl:08X}.history"}
            if text is not None:
                entry["history"] = text
            self.objects[f"wal/{tl:08X}/{tl:08X}.history.json"] = json.dumps(entry).encode()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFound(key) from None


def archive(*timelines: int, unindexed: tuple[int, ...] = ()) -> dict[str, ArchivedFile]:
    """An archive listing holding the history files of ``timelines`` (plus a segment, which a
    path does not depend on)."""
    names = {f"{tl:08X}.history": tl not in unindexed for tl in timelines}
    files = {n: ArchivedFile(n, True, indexed, 100, None) for n, indexed in names.items()}
    files["000000010000000000000002"] = ArchivedFile("000000010000000000000002", True, True, 100, None)
    return files


def history(*switches: tuple[int, str]) -> str:
    """A .history file as PostgreSQL writes it: parent timeline, switch LSN, reason."""
    return "".join(f"{tl}\t{lsn}\tno recovery target specified\n" for tl, lsn in switches)


H2 = history((1, "0/5000000"))  # timeline 2 left 1 at segment 5
H3 = history((1, "0/5000000"), (2, "0/8000000"))  # and 3 left 2 at segment 8
H3_FROM_1 = history((1, "0/7000000"))  # a 3 that left 1 at segment 7 (a sibling of 2)

CASES = [
    ("no history: the base's own timeline to the end",
     {}, 1, 2, [(1, 2, None)]),
    ("one switch",
     {2: H2}, 1, 2, [(1, 2, 5), (2, 5, None)]),
    ("two switches, followed to the newest",
     {2: H2, 3: H3}, 1, 2, [(1, 2, 5), (2, 5, 8), (3, 8, None)]),
    ("a base on timeline 2 starts there",
     {2: H2, 3: H3}, 2, 6, [(2, 6, 8), (3, 8, None)]),
    ("a base on the newest timeline has nothing to follow",
     {2: H2, 3: H3}, 3, 9, [(3, 9, None)]),
    ("the newest descendant wins over an older sibling",
     {2: H2, 3: H3_FROM_1}, 1, 2, [(1, 2, 7), (3, 7, None)]),
    ("a sibling branch is not followed from the other branch",
     {2: H2, 3: H3_FROM_1}, 2, 6, [(2, 6, None)]),
    ("a base taken on 1 after 2 branched off is not 2's ancestor",
     {2: H2}, 1, 6, [(1, 6, None)]),
    # Segment granularity: a base started in the switch's own segment follows the switch (its
    # start LSN is not compared with the switch LSN, so one started just after it would too).
    ("a base taken in the switch's own segment follows it",
     {2: H2}, 1, 5, [(1, 5, 5), (2, 5, None)]),
    ("comments and blank lines in a history file are skipped",
     {2: "# written by hand\n\n" + H2}, 1, 2, [(1, 2, 5), (2, 5, None)]),
    ("a history index entry without its text is skipped",
     {2: None}, 1, 2, [(1, 2, None)]),
    ("an empty history is skipped",
     {2: ""}, 1, 2, [(1, 2, None)]),
    ("a switch in the middle of a segment ends the path in that segment",
     {2: history((1, "0/57FFFF0"))}, 1, 2, [(1, 2, 5), (2, 5, None)]),
    ("a timeline in hex: 0x0A",
     {10: history((1, "0/5000000"), (2, "0/8000000"), (9, "0/A000000"))}, 2, 6,
     [(2, 6, 8), (9, 8, 10), (10, 10, None)]),
]


@pytest.mark.parametrize("histories, base_tl, start, path", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_timeline_path(histories, base_tl, start, path):
    assert timeline_path(HistoryIndex(histories), archive(*histories), base_tl, start, SEG) == path


def test_a_history_file_without_its_index_entry_is_not_followed():
    # wal-push writes the object, then the index entry (its commit point).
    store = HistoryIndex({2: H2})
    assert timeline_path(store, archive(2, unindexed=(2,)), 1, 2, SEG) == [(1, 2, None)]


def test_a_listed_index_entry_that_cannot_be_read_is_not_followed():
    assert timeline_path(HistoryIndex({}), archive(2), 1, 2, SEG) == [(1, 2, None)]


def test_switch_segments_follow_the_segment_size():
    store = HistoryIndex({2: history((1, "0/10000000"))})  # 256 MiB
    assert timeline_path(store, archive(2), 1, 0, 64 << 20) == [(1, 0, 4), (2, 4, None)]
    assert timeline_path(store, archive(2), 1, 0, SEG) == [(1, 0, 16), (2, 16, None)]
