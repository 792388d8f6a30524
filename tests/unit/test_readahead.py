"""ReadAhead: what a pipe's writer wrote arrives whole, in order, in chunks no larger than asked
— whether the writer is fast, trickles small writes (as pg_dump's 4 KiB writes do) or ends
mid-chunk; a file that is not a pipe is read the plain way."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from bvh_ops.stream import ReadAhead, widen_pipe


def _writer(fd: int, pieces: list[bytes], pause: float) -> threading.Thread:
    def run() -> None:
        with os.fdopen(fd, "wb", buffering=0) as w:
            for p in pieces:
                w.write(p)
                if pause:
                    time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize(("piece", "count", "pause"), [
    (4096, 700, 0.0),         # fast small writes: 2.7 MiB, not a multiple of the chunk
    (4096, 60, 0.001),        # a trickle: the reader pauses between small reads
    (3 << 20, 2, 0.0),        # writes larger than a chunk
    (1, 5, 0.0),              # a few bytes, then the end
])
def test_a_pipe_arrives_whole_and_in_order(piece, count, pause):
    r, w = os.pipe()
    pieces = [os.urandom(piece) for _ in range(count)]
    t = _writer(w, pieces, pause)
    with os.fdopen(r, "rb") as source:
        ahead = ReadAhead(source, chunk=1 << 20, depth=2)
        chunks = list(ahead)
    t.join()
    assert all(type(c) is bytes and 0 < len(c) <= 1 << 20 for c in chunks)
    assert all(len(c) == 1 << 20 for c in chunks[:-1])  # only the last chunk is short
    got = b"".join(chunks)
    assert len(got) == piece * count
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(pieces)).digest()


def test_an_empty_pipe_ends_at_once():
    r, w = os.pipe()
    os.close(w)
    with os.fdopen(r, "rb") as source:
        assert list(ReadAhead(source)) == []


def test_a_file_is_read_the_plain_way(tmp_path):
    data = os.urandom((2 << 20) + 17)
    (tmp_path / "f").write_bytes(data)
    with open(tmp_path / "f", "rb") as source:
        ahead = ReadAhead(source, chunk=1 << 20)
        assert ahead._fd is None
        assert b"".join(ahead) == data


def test_widen_pipe_reports_the_size_the_pipe_has():
    r, w = os.pipe()
    try:
        size = widen_pipe(r, 1 << 20)
        assert size >= 1 << 16  # 1 MiB where allowed; the 64 KiB default otherwise
        assert widen_pipe(r, 1 << 16) == 1 << 16
    finally:
        os.close(r)
        os.close(w)
