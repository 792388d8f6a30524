"""The typed view of a physical manifest's extra: one default per field, the JSON unchanged."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.lsn import DEFAULT_SEGMENT
from bvh_ops.pg.physinfo import PhysicalInfo


def info(**extra) -> PhysicalInfo:
    return PhysicalInfo.of(SimpleNamespace(backup_id="b1", kind="full", extra=extra))


@pytest.mark.parametrize(
    "extra, attr, expected",
    [
        ({}, "timeline", 1),
        ({"timeline": None}, "timeline", 1),
        ({"timeline": 3}, "timeline", 3),
        ({}, "segment_size", DEFAULT_SEGMENT),
        ({"wal_segment_size": 64 << 20}, "segment_size", 64 << 20),
        ({}, "start_lsn", None),
        ({"start_lsn": None}, "start_lsn", None),
        ({"start_lsn": "1/2000028"}, "start_lsn", (1 << 32) | 0x2000028),
        ({"start_lsn": "0/2000028"}, "start_lsn_text", "0/2000028"),
        ({"stop_lsn": "0/3000100"}, "stop_lsn", 0x3000100),
        ({}, "mode", None),
        ({"mode": "wal-only"}, "wal_only", True),
        ({"mode": "native"}, "wal_only", False),
        ({}, "archive_mode", "on"),  # WAL-only increments do not record it: they need an archive
        ({"archive_mode": "off"}, "archive_mode", "off"),
        ({}, "files_checked", 0),
        ({"files_checked": 1234}, "files_checked", 1234),
        ({"base_id": "b0"}, "base_id", "b0"),
        ({"promoted_from": "incremental"}, "promoted_from", "incremental"),
        # Start and stop segments on the backup's timeline and segment size.
        ({"start_lsn": "0/2000028", "timeline": 2}, "start_segment", "000000020000000000000002"),
        ({"start_lsn": "0/2000028", "wal_segment_size": 1 << 20}, "start_segment", "000000010000000000000020"),
        ({"stop_lsn": "0/3000000"}, "stop_segment", "000000010000000000000002"),  # ends exactly at a boundary
        ({"stop_lsn": "0/3000001"}, "stop_segment", "000000010000000000000003"),
    ],
)
def test_fields_and_defaults(extra, attr, expected):
    assert getattr(info(**extra), attr) == expected


@pytest.mark.parametrize("method", ["required_start_lsn", "required_stop_lsn"])
def test_a_missing_lsn_is_named_when_it_is_needed(method):
    with pytest.raises(BvhOpsError, match="backup b1 records no"):
        getattr(info(start_lsn=None), method)()


def test_a_malformed_lsn_fails_only_when_read():
    broken = info(start_lsn="nonsense", mode="native")
    assert broken.mode == "native"
    with pytest.raises(BvhOpsError, match="not an LSN"):
        _ = broken.start_lsn
