"""The log-rotation coordination rule (pure, table-driven): rotate or delete a platform log only
once the collector committed it to its end; copytruncate refused."""

from __future__ import annotations

import pytest

from bvh_ops.logs.offsets import Stored
from bvh_ops.maintenance.app import LogFile, rotation_plan

ACTIVE = LogFile("/l/app.log", "1:10", 5000)
OLD = [LogFile("/l/app.log.2", "1:9", 900), LogFile("/l/app.log.1", "1:8", 800)]


def stored(**offsets):
    return {fid: Stored(fid, "p", off, "") for fid, off in offsets.items()}


@pytest.mark.parametrize(("offsets", "expected"), [
    ({"1:10": 5000, "1:9": 900, "1:8": 800}, [("rotate", "/l/app.log"), ("delete", "/l/app.log.1")]),
    ({"1:10": 4000, "1:9": 900, "1:8": 800}, [("wait", "/l/app.log"), ("delete", "/l/app.log.1")]),
    ({"1:10": 5000, "1:9": 900, "1:8": 100}, [("rotate", "/l/app.log"), ("wait", "/l/app.log.1")]),
    ({}, [("wait", "/l/app.log"), ("wait", "/l/app.log.1")]),
])
def test_rotation_waits_for_collection(offsets, expected):
    steps = rotation_plan(ACTIVE, OLD, stored(**offsets), max_bytes=1000, keep=1)
    assert [(s.action, s.path) for s in steps] == expected
    waits = [s for s in steps if s.action == "wait"]
    assert all("not yet collected" in s.reason for s in waits)


def test_small_file_not_rotated_and_copytruncate_refused():
    assert rotation_plan(ACTIVE, [], stored(**{"1:10": 5000}), max_bytes=10_000, keep=3) == []
    (step,) = rotation_plan(ACTIVE, [], {}, max_bytes=1, keep=3, method="copytruncate")
    assert step.action == "wait" and "refused" in step.reason
