"""LSNs and WAL file names, in one place (pghoard's wal.py, Barman's xlog.py): LSN text <-> int,
segment names <-> (timeline, segment number) for any segment size, and the name forms PostgreSQL
archives (segment, .partial, .backup, .history). Standard library only: archive_command's lean
entry point imports it."""

from __future__ import annotations

import re

from bvh_ops.errors import BvhOpsError

DEFAULT_SEGMENT = 16 << 20  # PostgreSQL's default wal_segment_size

# <timeline 8 hex><log id 8 hex><segment 8 hex>
SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
# a segment, possibly the .partial one a timeline switch leaves behind
SEGMENT_OR_PARTIAL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
# every file archive_command is given: segment, .partial, backup history (.backup), timeline history
WAL_FILE = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")
# pg_lsn's input form: 1 to 8 hex digits on each side of the slash (int(x, 16) alone would also
# take "0x1", "-1", "1_0" and a 9-digit low half that silently spills into the high one).
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse_lsn(text: str) -> int:
    m = _LSN.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m:
        raise BvhOpsError(f"{text!r} is not an LSN (e.g. 0/3000060)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _per_id(seg_size: int) -> int:
    return 0x100000000 // seg_size


def segment_name(timeline: int, segno: int, seg_size: int = DEFAULT_SEGMENT) -> str:
    per = _per_id(seg_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment(name: str, seg_size: int = DEFAULT_SEGMENT) -> tuple[int, int] | None:
    """(timeline, segment number) of a complete segment's name, else None (a .partial is not one)."""
    m = SEGMENT.match(name)
    if not m:
        return None
    return int(m.group(1), 16), int(m.group(2), 16) * _per_id(seg_size) + int(m.group(3), 16)


def segment_of(lsn: int, timeline: int = 1, seg_size: int = DEFAULT_SEGMENT) -> str:
    """The name of the segment that holds ``lsn``."""
    return segment_name(timeline, lsn // seg_size, seg_size)
