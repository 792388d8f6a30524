"""How long an idle WAL pusher waits for the next ready file: twice the last gap between files
it knows of, within [IDLE_EXIT, IDLE_MAX] — so at a low WAL rate (a segment per
archive_timeout) one pusher serves every segment instead of one starting per segment."""

from __future__ import annotations

import pytest

from bvh_ops.wal.pusher import IDLE_EXIT, IDLE_MAX, idle_limit

CASES = [
    (None, IDLE_EXIT),  # nothing known (a first pusher): the short default
    (0.2, IDLE_EXIT),  # a stream: leave soon after it ends
    (IDLE_EXIT / 2, IDLE_EXIT),
    (60.0, 120.0),  # archive_timeout = 60: still there for the next segment
    (IDLE_MAX, IDLE_MAX),  # a gap this long: no more than IDLE_MAX idle
    (10 * IDLE_MAX, IDLE_MAX),
]


@pytest.mark.parametrize(("gap", "limit"), CASES)
def test_idle_limit_follows_the_gap_between_files(gap, limit):
    assert idle_limit(gap) == limit
