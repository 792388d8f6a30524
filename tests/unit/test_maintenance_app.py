"""The log-rotation coordination rule (pure, table-driven): a platform log past its size is
renamed at once (the collector follows the inode); a rotated file is deleted only once the
collector committed it to its end; copytruncate refused."""

from __future__ import annotations

import pytest

from bvh_ops.logs.offsets import Stored
from bvh_ops.logs.rotation import LogFile, rotation_plan

ACTIVE = LogFile("/l/app.log", "1:10", 5000)
OLD = [LogFile("/l/app.log.2", "1:9", 900), LogFile("/l/app.log.1", "1:8", 800)]


def stored(**offsets):
    return {fid: Stored(fid, "p", off, "") for fid, off in offsets.items()}


@pytest.mark.parametrize(("offsets", "expected"), [
    ({"1:10": 5000, "1:9": 900, "1:8": 800}, [("rotate", "/l/app.log"), ("delete", "/l/app.log.1")]),
    ({"1:10": 4000, "1:9": 900, "1:8": 800}, [("rotate", "/l/app.log"), ("delete", "/l/app.log.1")]),
    ({"1:10": 5000, "1:9": 900, "1:8": 100}, [("rotate", "/l/app.log"), ("wait", "/l/app.log.1")]),
    ({}, [("rotate", "/l/app.log"), ("wait", "/l/app.log.1")]),
])
def test_deletion_waits_for_collection_a_rename_does_not(offsets, expected):
    steps = rotation_plan(ACTIVE, OLD, stored(**offsets), max_bytes=1000, keep=1)
    assert [(s.action, s.path) for s in steps] == expected
    waits = [s for s in steps if s.action == "wait"]
    assert all("not yet collected" in s.reason for s in waits)
    (rotate,) = [s for s in steps if s.action == "rotate"]
    behind = 5000 - offsets.get("1:10", 0)
    assert (f"{behind} bytes still to collect" in rotate.reason) if behind else "collected to its end" in rotate.reason


def test_small_file_not_rotated_and_copytruncate_refused():
    assert rotation_plan(ACTIVE, [], stored(**{"1:10": 5000}), max_bytes=10_000, keep=3) == []
    (step,) = rotation_plan(ACTIVE, [], {}, max_bytes=1, keep=3, method="copytruncate")
    assert step.action == "wait" and "refused" in step.reason


def test_a_rotated_file_cut_mid_line_is_sealed_once_idle_then_deleted():
    from dataclasses import replace

    from bvh_ops.logs.rotation import SEAL_IDLE_SECONDS

    newest, old = LogFile("/l/app.log.1", "1:8", 800), LogFile("/l/app.log.2", "1:9", 900)
    offsets = stored(**{"1:10": 5000, "1:8": 800, "1:9": 850})  # 50 bytes of app.log.2 a line without its end
    cut = replace(old, unfinished_tail=True, idle_seconds=SEAL_IDLE_SECONDS)
    steps = rotation_plan(ACTIVE, [newest, cut], offsets, max_bytes=10_000, keep=1)
    assert [(s.action, s.path) for s in steps] == [("seal", "/l/app.log.2"), ("delete", "/l/app.log.2")]
    assert "last 50 bytes" in steps[0].reason
    # written a moment ago (its writer may finish the line), or complete lines still to collect,
    # or never collected at all: it waits, and says why
    for f, offs in ((replace(cut, idle_seconds=SEAL_IDLE_SECONDS - 1), offsets),
                    (replace(cut, unfinished_tail=False), offsets),
                    (cut, stored(**{"1:10": 5000, "1:8": 800}))):
        (step,) = rotation_plan(ACTIVE, [newest, f], offs, max_bytes=10_000, keep=1)
        assert step.action == "wait" and "not yet collected" in step.reason, step
    (step,) = rotation_plan(ACTIVE, [newest, replace(cut, idle_seconds=1)], offsets, max_bytes=10_000, keep=1)
    assert "sealed once" in step.reason
    # one of the newest keep is never sealed, however idle
    assert [(s.action, s.path) for s in rotation_plan(ACTIVE, [cut, newest], offsets, max_bytes=10_000, keep=1)] == [
        ("delete", "/l/app.log.1")]
    assert rotation_plan(ACTIVE, [newest, cut], offsets, max_bytes=10_000, keep=2) == []
