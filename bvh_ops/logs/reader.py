"""Reading a log file from an offset: complete records only, streamed (memory bounded by the
longest line, itself capped at MAX_LINE_BYTES). A last line without its newline is still being
written: it is left for the next run. A csvlog record may span lines (a quoted statement with
newlines): lines are joined until its quotes balance."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from bvh_ops.logs.parsers import csv_record_complete

MAX_LINE_BYTES = 1 << 20   # a longer "line" is quarantined (cut), not held in memory whole
CHUNK = 1 << 16


@dataclass(frozen=True)
class RawLine:
    offset: int     # where the record starts in the file
    end: int        # where the next one starts (the offset to store once it is committed)
    text: str       # without its newline; "" with ``error`` set when it could not be decoded
    error: str | None = None


def file_head_sha256(fh: BinaryIO, length: int) -> str:
    fh.seek(0)
    return hashlib.sha256(fh.read(length)).hexdigest() if length else ""


def read_records(fh: BinaryIO, start: int, *, multiline_csv: bool = False) -> Iterator[RawLine]:
    """Complete records of ``fh`` from ``start``; stops before a final partial line."""
    fh.seek(start)
    pos = start
    pending: list[bytes] = []
    pending_start = start
    while True:
        line = fh.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if not line.endswith(b"\n"):
            if len(line) <= MAX_LINE_BYTES:
                return              # partial last line: the writer has not finished it
            # Over-long: skip to its end, report it cut.
            skipped = len(line)
            while True:
                more = fh.readline(CHUNK)
                if not more:
                    return          # still being written: retried next run from ``pos``
                skipped += len(more)
                if more.endswith(b"\n"):
                    break
            yield RawLine(pos, pos + skipped, line[:1024].decode("utf-8", "replace"),
                          f"line longer than {MAX_LINE_BYTES} bytes ({skipped} bytes)")
            pos += skipped
            pending, pending_start = [], pos
            continue
        end = pos + len(line)
        if multiline_csv:
            if not pending:
                pending_start = pos
            pending.append(line)
            pos = end
            joined = b"".join(pending)
            if len(joined) > MAX_LINE_BYTES:
                yield RawLine(pending_start, end, joined[:1024].decode("utf-8", "replace"),
                              f"csv record longer than {MAX_LINE_BYTES} bytes (unbalanced quotes?)")
                pending = []
                continue
            text = _decode(joined)
            if text is None:
                yield RawLine(pending_start, end, joined[:1024].decode("utf-8", "replace"), "not UTF-8")
                pending = []
            elif csv_record_complete(text):
                pending = []
                if text.strip():
                    yield RawLine(pending_start, end, text.rstrip("\r\n"))
            continue
        text = _decode(line)
        if text is None:
            yield RawLine(pos, end, line[:1024].decode("utf-8", "replace").rstrip("\n"), "not UTF-8")
        elif text.strip():
            yield RawLine(pos, end, text.rstrip("\r\n"))
        else:
            yield RawLine(pos, end, "")   # blank: nothing to store, but the offset moves on
        pos = end


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
