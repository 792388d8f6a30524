"""ReadAhead: what a pipe's or a socket's writer wrote arrives whole, in order, in chunks no
larger than asked — whether the writer is fast, trickles small writes (as pg_dump's 4 KiB writes
do) or ends mid-chunk; a file that is neither is read the plain way. A tool started with
``spawn_to_socket`` streams its stdout through the socket."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from bvh_ops.pg.tools import spawn_to_socket
from bvh_ops.stream import ReadAhead, widen_pipe


def _writer(fd: int, pieces: list[bytes], pause: float) -> threading.Thread:
    def run() -> None:
        with os.fdopen(fd, "wb", buffering=0) as w:
            for p in pieces:
                rest = memoryview(p)
                while rest:  # a signal (a profiler's stop) can cut a large raw write short
                    rest = rest[w.write(rest):]
                if pause:
                    time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("kind", ["pipe", "socket"])
@pytest.mark.parametrize(("piece", "count", "pause"), [
    (4096, 700, 0.0),         # fast small writes: 2.7 MiB, not a multiple of the chunk
    (4096, 60, 0.001),        # a trickle: the reader pauses between small reads
    (3 << 20, 2, 0.0),        # writes larger than a chunk
    (1, 5, 0.0),              # a few bytes, then the end
])
def test_a_pipe_arrives_whole_and_in_order(kind, piece, count, pause):
    pieces = [os.urandom(piece) for _ in range(count)]
    if kind == "pipe":
        r, w = os.pipe()
        t = _writer(w, pieces, pause)
        with os.fdopen(r, "rb") as source:
            chunks = list(ReadAhead(source, chunk=1 << 20, depth=2))
    else:
        ours, theirs = socket.socketpair()
        t = _writer(theirs.detach(), pieces, pause)
        with ours:
            ahead = ReadAhead(ours, chunk=1 << 20, depth=2)
            assert ahead._sock is ours
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


def test_an_empty_socket_ends_at_once():
    ours, theirs = socket.socketpair()
    theirs.close()
    with ours:
        assert list(ReadAhead(ours)) == []


def test_a_tool_streams_its_stdout_through_a_socket():
    """The child sees an ordinary stdout (buffered writes of odd sizes); we get every byte, in
    chunks of the size asked, and its exit status; nothing is left open on our side for it."""
    code = ("import hashlib, os, sys\n"
            "h = hashlib.sha256()\n"
            "for i in range(300):\n"
            "    b = os.urandom(7919 + i); h.update(b); sys.stdout.buffer.write(b)\n"
            "sys.stdout.buffer.flush(); sys.stderr.write(h.hexdigest())\n")
    exe = Path(sys.executable)
    proc, source = spawn_to_socket(exe.name, ["-c", code], env=dict(os.environ), bin_dir=exe.parent)
    with source:
        chunks = list(ReadAhead(source, chunk=1 << 20))
    assert proc.wait() == 0
    digest = proc.stderr.read().decode()
    proc.stderr.close()
    assert [len(c) for c in chunks[:-1]] == [1 << 20] * (len(chunks) - 1)
    assert sum(map(len, chunks)) == sum(7919 + i for i in range(300))
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == digest


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
