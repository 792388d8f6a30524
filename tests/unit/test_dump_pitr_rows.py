"""The C sums behind the drill's PITR side from the dump (bvh_ops.drill.dumpside): each COPY line
becomes the record text PostgreSQL's record_out writes for the row, hashed as hashtextextended
hashes it, and only rows at or before the cutoff count; a line it cannot read is counted as such
(the table is then left to the server), never summed as something else."""

from __future__ import annotations

import struct

import pytest

from bvh_ops.drill import dumpside

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not dumpside.available(), reason="the C walk is not built here")]

ACC = struct.Struct("<6q")
CUT = b"2026-06-01 12:00:00.5+00"


def _run(lines: bytes, ncols: int, col: int, chunked: bool = False) -> tuple[int, int, int, int]:
    from bvh_ops.logical._chunkwalk import rows

    if chunked:  # as the dump holds them: a sign byte and a 4-byte length before each row
        lines = b"".join(b"\0" + struct.pack("<I", len(line)) + line for line in lines.splitlines(keepends=True))
    acc = bytearray(ACC.size)
    assert rows(lines, 0, len(lines), chunked, ncols, col, CUT, acc) == len(lines)
    le, lo, hi, total, bad, _ = ACC.unpack(acc)
    return le, (hi << 64) + (lo & ((1 << 64) - 1)), total, bad


def _h(text: str) -> int:
    from bvh_ops.logical._chunkwalk import hash_text

    return hash_text(text.encode())


def test_postgresqls_hash_of_known_text():
    # SELECT hashtextextended('abc', 0), hashtextextended('', 0) on PostgreSQL 15 (any version: the
    # extended hash functions are stable, hash partitioning keeps them through pg_upgrade).
    assert _h("abc") == -6747756470228489321
    assert _h("") == -6939563903564495251
    assert _h("hello world, 12345678901234567890") == -2299257716452617363


@pytest.mark.parametrize("chunked", [False, True])
def test_each_line_is_hashed_as_its_record_text(chunked):
    line = (b"1\tab\\tc\t\\N\t\t(x) \"q\" \\\\ y,z\t\xc3\xbc\t2026-06-01 12:00:00+00\n")
    record = '(1,"ab\tc",,"","(x) ""q"" \\\\ y,z",ü,"2026-06-01 12:00:00+00")'
    assert _run(line, 7, 6, chunked) == (1, _h(record), 1, 0)


def test_only_rows_at_or_before_the_cutoff_count():
    stamps = [b"2026-06-01 12:00:00+00", b"2026-06-01 12:00:00.5+00", b"2026-06-01 12:00:00.25+00",
              b"2026-06-01 12:00:00.500001+00", b"2026-06-01 12:00:01+00", b"\\N"]
    lines = b"".join(b"%d\t%s\n" % (i, s) for i, s in enumerate(stamps))
    le, total, every, bad = _run(lines, 2, 1)
    assert (le, every, bad) == (3, 6, 0)
    assert total == sum(_h(f"({i},\"{s.decode()}\")") for i, s in enumerate(stamps[:3]))


@pytest.mark.parametrize("line", [
    b"1\t2026-06-01 12:00:00+00\textra\n",  # a field too many
    b"1\n",  # a field too few
    b"1\tinfinity\n",  # not of the plain form: its order as text is not its order in time
    b"1\t2026-06-01 12:00:00+02\n",  # not written in UTC
    b"1\t0044-03-15 12:00:00+00 BC\n",
    b"1\tab\\\n",  # an escape cut short
])
def test_a_line_it_cannot_read_is_counted_as_such(line):
    le, total, every, bad = _run(line, 2, 1)
    assert (le, total, bad) == (0, 0, 1)


def test_copys_end_marker_is_not_a_row():
    assert _run(b"1\t2026-06-01 12:00:00+00\n\\.\n", 2, 1)[2:] == (1, 0)


@pytest.mark.parametrize("empties", [1, 30, 60, 1500])
def test_rows_of_quotes_and_empty_strings_fit_their_record_text(empties):
    """Every empty field becomes two quotes and a comma, every quote two: the record text can be
    near three times the line (a row built to fill the buffer past a 64 KiB boundary)."""
    stamp = "2026-01-01 00:00:00+00"
    quotes = 32766 - 23 - empties
    line = (stamp + "\t" + '"' * quotes + "\t" * empties + "\n").encode()
    record = '("' + stamp + '","' + '""' * quotes + '"' + ',""' * empties + ")"
    for _ in range(3):  # a write past the buffer shows as a crash or a wrong sum by the third row
        assert _run(line * 3, empties + 2, 0) == (3, 3 * _h(record), 3, 0)


def test_the_sources_it_can_match_are_utf8_glibc_little_endian():
    from bvh_ops.drill.dumpside import matches_source

    linux = "PostgreSQL 15.8 (Debian 15.8-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) 12.2.0, 64-bit"
    assert matches_source("UTF8", linux)
    assert matches_source("UTF8", "PostgreSQL 16.4 on aarch64-unknown-linux-gnu, compiled by gcc, 64-bit")
    assert not matches_source("LATIN1", linux)
    assert not matches_source("UTF8", "PostgreSQL 16.4 on x86_64-apple-darwin23.4.0, compiled by clang, 64-bit")
    assert not matches_source("UTF8", "PostgreSQL 16.4 on amd64-portbld-freebsd14.0, compiled by clang, 64-bit")
    assert not matches_source("UTF8", "PostgreSQL 16.4 on s390x-ibm-linux-gnu, compiled by gcc, 64-bit")
    assert not matches_source("UTF8", "PostgreSQL 16.4 on x86_64-pc-linux-musl, compiled by gcc, 64-bit")
    assert not matches_source("UTF8", None)


def test_a_cutoff_before_the_year_1000_is_written_with_four_digits():
    from datetime import UTC, datetime

    from bvh_ops.drill.dumpside import cutoff_text

    assert cutoff_text(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)) == b"0999-01-02 03:04:05+00"


@pytest.mark.parametrize("desc", ["TABLE", "FOREIGN TABLE"])
def test_a_parent_of_any_child_table_is_not_summed(desc):
    """The server's read of a parent counts its children's rows — a foreign table's too — and
    the parent's data block holds none of them."""
    from datetime import UTC, datetime

    from bvh_ops.drill.dumpside import DumpPitr
    from bvh_ops.logical.archive import TocEntry

    schema = {"tables": {"public.parent": [["id", "integer", False], ["at", "timestamp with time zone", False]]}}
    plan = DumpPitr(["public.parent:at"], datetime(2026, 6, 1, tzinfo=UTC), schema)
    data = TocEntry(3, "TABLE DATA", "public", "parent", "", True, copy_stmt="COPY public.parent (id, at) FROM stdin;\n")
    child = TocEntry(2, desc, "other", "kid", "CREATE TABLE other.kid (\n    x text\n)\nINHERITS (public.parent);\n", False)
    assert plan.sink_for(data, {2: child, 3: data}, "UTF8") is None
    assert "inheritance children" in plan.skipped["public.parent:at"]
    plan.reset()
    assert plan.sink_for(data, {3: data}, "UTF8") is not None  # no child: summed
