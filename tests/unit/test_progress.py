"""Progress reports reach every listener; a task's log gets one line per step and one at the end."""

from __future__ import annotations

import pytest

from bvh_ops import progress
from bvh_ops.progress import LogEvery, listening

MB = 1_000_000


@pytest.mark.parametrize("reports, expected", [
    # (done, total) per report, in MB
    ([(1, None), (100, None), (300, None), (500, None)], ["dump: 300 MB", "dump: 500 MB"]),
    ([(250, 600), (600, 600)], ["dump: 250 MB of 600 MB (41 %)", "dump: 600 MB of 600 MB (100 %)"]),
    ([(10, 20), (20, 20), (20, 20)], ["dump: 20 MB of 20 MB (100 %)"]),
])
def test_log_every_writes_a_line_per_step_and_at_the_end(reports, expected):
    lines: list[str] = []
    with listening(LogEvery(lines.append, step=200 * MB)):
        for done, total in reports:
            progress.report("dump", done * MB, total * MB if total else None)
    assert lines == expected


def test_listeners_hear_reports_only_while_listening():
    heard: list[tuple] = []
    with listening(lambda *a: heard.append(a)):
        progress.report("restore", 5, 10)
    progress.report("restore", 10, 10)
    assert heard == [("restore", 5, 10)]
