"""TODO"""

from __future__ import annotations

import re

from bvh_ops.errors import BvhOpsError

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


DEFAULT_SEGMENT = 16 << 20


_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")


_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")


def _per_id(seg_size: int) -> int:
    return 0x100000000 // seg_size


def segment_name(timeline: int, segno: int, seg_size: int = DEFAULT_SEGMENT) -> str:
    per = _per_id(seg_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment(name: str, seg_size: int = DEFAULT_SEGMENT) -> tuple[int, int] | None:
    m = _SEGMENT.match(name)
    if not m:
        return None
    return int(m.group(1), 16), int(m.group(2), 16) * _per_id(seg_size) + int(m.group(3), 16)
