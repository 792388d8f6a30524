"""Pure guards of the restore path: tar members that may be extracted, a WAL segment's first page
against its name, and a recovery that ended before the end of the archive."""

from __future__ import annotations

import io
import struct
import tarfile
from types import SimpleNamespace

import pytest

from bvh_ops.errors import IntegrityError
from bvh_ops.pg.tarscan import TarGuard, unsafe_member
from bvh_ops.physical.restore import ended_early
from bvh_ops.wal.store import segment_header_problem

SEG = 16 << 20


@pytest.mark.parametrize("name, typeflag, bad", [
    ("base/1/1259", b"0", None),
    ("global/", b"5", None),
    ("PG_VERSION", b"\0", None),
    ("/etc/passwd", b"0", "leaves"),
    ("base/../../etc/cron.d/x", b"0", "leaves"),
    ("..", b"5", "leaves"),
    ("pg_tblspc/16384", b"2", "symbolic link"),
    ("base/1/1259", b"1", "hard link"),
    ("dev", b"3", "character device"),
    ("././@LongLink", b"L", "GNU long name"),
    ("pax", b"x", "pax header"),
])
def test_unsafe_member(name, typeflag, bad):
    problem = unsafe_member(name, typeflag)
    assert (problem is None) == (bad is None)
    if bad:
        assert bad in problem


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_guard_passes_a_plain_archive_fed_in_odd_chunks():
    blob = _tar([_file("PG_VERSION", b"18\n"), _file("base/1/1259", b"x" * 5000), _file("global/pg_control", b"c")])
    guard = TarGuard()
    for i in range(0, len(blob), 333):
        guard.feed(blob[i:i + 333])
    assert guard.members == 3


@pytest.mark.parametrize("evil", ["hardlink", "symlink", "dotdot", "absolute"])
def test_guard_stops_before_the_evil_member(evil):
    info = tarfile.TarInfo({"dotdot": "../outside", "absolute": "/tmp/outside"}.get(evil, "base/1/evil"))
    if evil == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/shadow"
    elif evil == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
    blob = _tar([_file("PG_VERSION", b"18\n"), (info, None), _file("after", b"y")])
    guard = TarGuard()
    with pytest.raises(IntegrityError, match="refusing to extract"):
        guard.feed(blob)
    assert guard.members == 1  # the member before it passed; nothing after it was accepted


def test_guard_refuses_a_corrupt_header():
    blob = bytearray(_tar([_file("PG_VERSION", b"18\n")]))
    blob[0] ^= 0x20  # the name changes, the header checksum no longer matches
    with pytest.raises(IntegrityError, match="checksum"):
        TarGuard().feed(bytes(blob))


def _page(segno: int, sysid: int = 7_400_000_000_000_000_001, seg_size: int = SEG) -> bytes:
    # XLogLongPageHeaderData: magic, info (XLP_LONG_HEADER), tli, pageaddr, rem_len, pad, sysid, seg, blcksz
    return struct.pack("<HHIQI4xQII", 0xD118, 0x0002, 1, segno * seg_size, 0, sysid, seg_size, 8192)


@pytest.mark.parametrize("name, head, sysid, problem", [
    ("00000001000000000000001D", _page(0x1D), None, None),
    ("00000001000000000000001D", _page(0x1D), "7400000000000000001", None),
    ("00000001000000000000001D", _page(0x1C), None, "not of its own position"),
    ("00000001000000010000001D", _page(0x11D), None, None),  # log file 1: segno 256 + 0x1D
    ("00000001000000000000001D", _page(0x1D, sysid=42), "7400000000000000001", "another cluster"),
    ("00000001000000000000001D.partial", _page(0x1C), None, "not of its own position"),
    ("00000001000000000000001D", b"\0" * 40, None, "does not begin with a WAL segment header"),
    ("00000002.history", b"1\t0/3000000\tno recovery target specified\n", None, None),
])
def test_segment_header_against_its_name(name, head, sysid, problem):
    got = segment_header_problem(name, head, sysid)
    assert (got is None) == (problem is None), got
    if problem:
        assert problem in got


def _archive(last_segno: int, tl: int = 1):
    return SimpleNamespace(end_lsn=(last_segno + 1) * SEG, contiguous_until=f"{tl:08X}{0:08X}{last_segno:08X}",
                           timelines=[tl])


@pytest.mark.parametrize("redo_done, last, early", [
    ("0/23000060", 0x23, False),      # in the last archived segment
    ("0/22FFFFA0", 0x23, False),      # a record spanning into a segment not archived yet
    ("0/1C000060", 0x23, True),       # stopped at 28 while the archive reaches 35
    (None, 0x23, True),               # redo end unknown: cannot be confirmed
])
def test_recovery_that_ended_early_names_the_segment(redo_done, last, early):
    problem = ended_early(redo_done, _archive(last), SEG)
    assert (problem is not None) == early
    if redo_done == "0/1C000060":
        assert "00000001000000000000001D could not be replayed" in problem


@pytest.mark.parametrize("evil", ["symlink", "dotdot"])
def test_a_drill_verify_extraction_stops_at_the_evil_member_and_keeps_nothing(tmp_path, evil):
    """The deep verify's extraction for the restore (PreparedExtract, GNU tar) has the restore's
    guard: a member it refuses drops the whole extraction (the restore then fetches the base
    itself and refuses it there); a plain archive is kept whole, with the server's empty dirs."""
    from bvh_ops.physical.restore import PreparedExtract, prepared_part

    info = tarfile.TarInfo("../outside" if evil == "dotdot" else "base/1/evil")
    if evil == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc"
    blob = _tar([_file("PG_VERSION", b"18\n"), (info, None), _file("after", b"y")])
    sink = PreparedExtract(tmp_path / "scratch", "b1")
    for i in range(0, len(blob), 333):
        sink.write(blob[i:i + 333])
    sink.commit()
    assert "refusing to extract" in sink.dropped
    assert list((tmp_path / "scratch").iterdir()) == [] and not (tmp_path / "outside").exists()

    good = PreparedExtract(tmp_path / "scratch", "b2")
    good.write(_tar([_file("PG_VERSION", b"18\n"), _file("base/1/1259", b"x" * 5000)]))
    good.commit()
    part = prepared_part(tmp_path / "scratch", "b2")
    assert good.dropped is None and (part / "base/1/1259").read_bytes() == b"x" * 5000
    assert (part / "pg_replslot").is_dir() and not part.with_name(part.name + ".partial").exists()


def test_a_tar_that_complains_about_every_member_does_not_stall_the_extraction(tmp_path):
    """GNU tar failing on each of thousands of members (here: under a path that is a file; a full
    disk does the same) writes far more than a pipe holds to its stderr: it is drained as it
    comes, so tar keeps reading, the extraction is dropped with tar's reason, and nothing stays."""
    import threading

    from bvh_ops.physical.restore import PreparedExtract

    blob = _tar([_file("f", b"x")] + [_file(f"f/member-{i:05d}", b"y") for i in range(3000)])
    sink = PreparedExtract(tmp_path / "scratch", "b1")
    done = threading.Thread(target=lambda: (sink.write(blob), sink.commit()), daemon=True)
    done.start()
    done.join(timeout=120)
    assert not done.is_alive(), "the extraction stalled on tar's stderr"
    assert "tar" in sink.dropped and "Not a directory" in sink.dropped
    assert list((tmp_path / "scratch").iterdir()) == []
