"""LSNs and WAL file names (bvh_ops.pg.lsn), every form in a table: what PostgreSQL prints, what an
operator types, and the names it gives segments of 16 MiB and 64 MiB."""

from __future__ import annotations

import pytest

from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.lsn import DEFAULT_SEGMENT, format_lsn, parse_lsn, parse_segment, segment_name

MiB = 1 << 20


@pytest.mark.parametrize("text, value, canonical", [
    ("0/0", 0, "0/0"),
    ("0/3000060", 0x3000060, "0/3000060"),
    ("16/B374D848", 0x16_B374D848, "16/B374D848"),
    ("16/b374d848", 0x16_B374D848, "16/B374D848"),  # pg_lsn accepts either case; we print upper
    ("0/03000060", 0x3000060, "0/3000060"),  # leading zeros
    (" 0/3000060\n", 0x3000060, "0/3000060"),  # as read from a file or a psql line
    ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1, "FFFFFFFF/FFFFFFFF"),
])
def test_parse_and_format_lsn(text, value, canonical):
    assert parse_lsn(text) == value
    assert format_lsn(value) == canonical
    assert parse_lsn(format_lsn(value)) == value


@pytest.mark.parametrize("text", [
    "", "3000060", "0/", "/0", "0/3000060/1", "0/xyz", "0 / 1", "g/0",
    # What int(x, 16) would take but PostgreSQL's pg_lsn refuses (1 to 8 hex digits each side):
    "0/100000000", "-1/0", "+1/0", "0x1/0", "1_0/0",
])
def test_bad_lsn_is_a_clear_error(text):
    with pytest.raises(BvhOpsError, match="is not an LSN"):
        parse_lsn(text)


@pytest.mark.parametrize("value", [0, 1, 0xFFFFFFFF, 1 << 32, 0x16_B374D848, (1 << 64) - 1])
def test_format_then_parse_round_trips(value):
    assert parse_lsn(format_lsn(value)) == value


@pytest.mark.parametrize("timeline, segno, seg_size, name", [
    # 16 MiB segments: 256 per "xlogid"
    (1, 0, 16 * MiB, "000000010000000000000000"),
    (1, 3, 16 * MiB, "000000010000000000000003"),
    (1, 0xFF, 16 * MiB, "0000000100000000000000FF"),
    (1, 0x100, 16 * MiB, "000000010000000100000000"),
    (1, 0x16B3, 16 * MiB, "0000000100000016000000B3"),  # pg_walfile_name('16/B374D848')
    (0x1A, 0x1FF, 16 * MiB, "0000001A00000001000000FF"),
    # 64 MiB segments (initdb --wal-segsize=64): 64 per "xlogid", the last part stops at 3F
    (1, 0x3F, 64 * MiB, "00000001000000000000003F"),
    (1, 0x40, 64 * MiB, "000000010000000100000000"),
    (2, 0x41, 64 * MiB, "000000020000000100000001"),
    # 1 GiB, the largest: 4 per "xlogid"
    (1, 5, 1024 * MiB, "000000010000000100000001"),
])
def test_segment_names_both_ways(timeline, segno, seg_size, name):
    assert segment_name(timeline, segno, seg_size) == name
    assert parse_segment(name, seg_size) == (timeline, segno)


@pytest.mark.parametrize("lsn, seg_size, name", [
    ("0/3000060", 16 * MiB, "000000010000000000000003"),
    ("16/B374D848", 16 * MiB, "0000000100000016000000B3"),
    ("16/B374D848", 64 * MiB, "00000001000000160000002C"),
    ("1/FFFFFFFF", 64 * MiB, "00000001000000010000003F"),
])
def test_the_segment_holding_an_lsn(lsn, seg_size, name):
    assert segment_name(1, parse_lsn(lsn) // seg_size, seg_size) == name


def test_default_segment_size_is_16_mib():
    assert DEFAULT_SEGMENT == 16 * MiB
    assert segment_name(1, 0x100) == "000000010000000100000000"
    assert parse_segment("000000010000000100000000") == (1, 0x100)


@pytest.mark.parametrize("name", [
    "00000002.history",
    "000000010000000000000003.partial",
    "000000010000000000000003.00000028.backup",
    "0000000100000000000000ff",  # PostgreSQL names are upper case
    "00000001000000000000003",  # 23 characters
    "0000000100000000000000033",  # 25
    "",
    "archive_status",
])
def test_names_that_are_not_segments(name):
    assert parse_segment(name) is None
