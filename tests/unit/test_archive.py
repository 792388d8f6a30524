"""The custom-format stream reader: per-table COPY digests (fingerprints 4: ROW_MARK before
each row, BLAKE3) from synthetic archives laid out as pg_dump 15 (archive 1.14) and 17/18 (1.16) write
them, fed in any chunking."""

from __future__ import annotations

import hashlib
import random

import pytest
from blake3 import blake3

from bvh_ops.errors import IntegrityError
from bvh_ops.logical import archive as archive_mod
from bvh_ops.logical.archive import BIG_CHUNK, COPY_END, DumpFingerprinter
from bvh_ops.pg.fingerprint import ROW_MARK, RowFramer, frame_rows


def _int(v: int) -> bytes:
    return bytes([1 if v < 0 else 0]) + abs(v).to_bytes(4, "little")


def _str(s: str | None) -> bytes:
    if s is None:
        return _int(-1)
    b = s.encode()
    return _int(len(b)) + b


def archive(tables: dict[tuple[str, str], list[bytes]], blobs: dict[int, bytes] | None = None,
            version: tuple[int, int] = (1, 16), compression: int = 0) -> bytes:
    """A custom-format archive: an ENCODING entry, one TABLE DATA entry per table (rows as
    one chunk each, then pg_dump's end marker), and large objects."""
    out = bytearray(b"PGDMP" + bytes([version[0], version[1], 0, 4, 8, 1]))
    out += bytes([compression]) if version >= (1, 15) else _int(compression)
    for v in (0, 0, 0, 1, 1, 2026, 0):
        out += _int(v)
    out += _str("db") + _str("18.0") + _str("18.0")
    entries = [(1, 0, "ENCODING", "ENCODING", "", "SET client_encoding = 'UTF8';\n")]
    for i, (schema, tag) in enumerate(tables, start=10):
        entries.append((i, 1, tag, "TABLE DATA", schema, ""))
    if blobs:
        entries.append((99, 1, "BLOBS", "BLOBS", "", ""))
    out += _int(len(entries))
    for dump_id, had, tag, desc, nsp, defn in entries:
        out += _int(dump_id) + _int(had) + _str("0") + _str("0") + _str(tag) + _str(desc) + _int(2)
        out += _str(defn) + _str("") + _str("") + _str(nsp) + _str("") + _str("")
        if version >= (1, 16):
            out += _int(114)
        out += _str("postgres") + _str("false") + _str("5") + _str(None)
        out += bytes([1]) + bytes(8)
    for i, rows in enumerate(tables.values(), start=10):
        out += bytes([1]) + _int(i)
        for row in [*rows, COPY_END]:
            out += _int(len(row)) + row
        out += _int(0)
    if blobs:
        out += bytes([3]) + _int(99)
        for oid, data in blobs.items():
            out += _int(oid)
            for k in range(0, len(data), 7):
                out += _int(len(data[k:k + 7])) + data[k:k + 7]
            out += _int(0)
        out += _int(0)
    return bytes(out)


# Every test here runs with each chunk walker this install has: numpy's and, where built, C's.
WALKERS = ["numpy"] + (["c"] if archive_mod.WALKER == "c" else [])
_walker = {"name": archive_mod.WALKER}


@pytest.fixture(autouse=True, params=WALKERS)
def walker(request):
    _walker["name"] = request.param
    yield request.param
    _walker["name"] = archive_mod.WALKER


def feed(data: bytes, sizes, **kw) -> DumpFingerprinter:
    fp = DumpFingerprinter(walker=_walker["name"], **kw)
    pos = 0
    for size in sizes:
        if pos >= len(data):
            break
        fp.feed(data[pos:pos + size])
        pos += size
    if pos < len(data):
        fp.feed(data[pos:])
    fp.finish()
    return fp


# Row lengths 10, 266 and 2570 put a newline byte (0x0a) inside the chunk header after them.
ROWS = [b"%d\tname %d\t\\N\n" % (i, i) for i in range(3000)] + [b"123456789\n", b"x" * 265 + b"\n",
                                                                    b"y" * 2569 + b"\n", b"\\\\.\n"]


def text_digest(rows: list[bytes]) -> str:
    """What a restored table's COPY text hashes to: the rows, each behind ROW_MARK, BLAKE3."""
    return blake3(b"".join(ROW_MARK + r for r in rows)).hexdigest()


def _random_sizes(total: int, *, seed: int) -> list[int]:
    """Chunk sizes of 1-4,000 bytes drawn from one generator until they cover ``total``. (The
    list was one new ``Random(7)`` per byte: every "random" chunk had the same size, and making
    them took 6 s of the suite.)"""
    rng, sizes = random.Random(seed), []
    while sum(sizes) < total:
        sizes.append(rng.randint(1, 4000))
    return sizes


@pytest.mark.parametrize("version", [(1, 14), (1, 16)])
@pytest.mark.parametrize("chunking", ["whole", "1 byte", "random", "1 MiB"])
def test_digest_is_the_copy_text_whatever_the_chunking(version, chunking):
    tables = {("public", "t"): ROWS, ("s p", "Empty"): [], ("public", "u"): ROWS[:7]}
    data = archive(tables, {16400: b"hello blob", 16401: b"\n\x00" * 40}, version=version)
    sizes = {"whole": [len(data)], "1 byte": [1] * len(data), "1 MiB": [1 << 20],
             "random": _random_sizes(len(data), seed=7)}[chunking]
    fp = feed(data, sizes)
    for key, rows in tables.items():
        assert fp.tables[key].rows == len(rows), key
        assert fp.tables[key].hexdigest() == text_digest(rows), key
    assert fp.encoding == "UTF8"
    assert fp.large_objects.count == 2
    whole = feed(data, [len(data)])
    assert fp.large_objects.total == whole.large_objects.total


def test_a_changed_row_changes_the_digest_and_a_chunk_larger_than_the_buffer_streams():
    big = b"z" * (BIG_CHUNK + 123) + b"\n"
    a = feed(archive({("public", "t"): [b"1\n", big, b"3\n"]}), [65536] * 100)
    b = feed(archive({("public", "t"): [b"1\n", big, b"4\n"]}), [65536] * 100)
    assert a.tables["public", "t"].rows == 3
    assert a.tables["public", "t"].hexdigest() == text_digest([b"1\n", big, b"3\n"])
    assert a.tables["public", "t"].hexdigest() != b.tables["public", "t"].hexdigest()


def test_rows_moved_across_a_row_boundary_change_a_framed_digest():
    """The marks make the framing unambiguous: the same bytes split into other rows differ."""
    a = feed(archive({("public", "t"): [b"ab\n", b"c\n"]}), [1 << 20]).tables["public", "t"]
    b = feed(archive({("public", "t"): [b"a\n", b"bc\n"]}), [1 << 20]).tables["public", "t"]
    assert a.rows == b.rows == 2 and a.hexdigest() != b.hexdigest()


@pytest.mark.parametrize("seed", range(5))
def test_a_restored_copys_text_framed_in_any_pieces_gives_the_backups_digest(seed):
    """The drill frames psql's COPY output as it arrives (RowFramer, and frame_rows per read):
    whatever the read boundaries, the digest is the one the backup took from the archive."""
    rng = random.Random(seed)
    rows = _rows(rng, 3000, [1, 2, 10, 266, 2570])
    backup = feed(archive({("public", "t"): rows}), [1 << 20]).tables["public", "t"]
    text, sha, row_start, at = b"".join(rows), blake3(), True, 0
    framer = RowFramer(blake3())
    while at < len(text):
        piece = text[at:at + rng.choice([1, 2, 5, 6, rng.randint(1, 5000)])]
        sha.update(frame_rows(piece, row_start))
        framer.update(piece)
        row_start, at = piece.endswith(b"\n"), at + len(piece)
    assert (backup.rows, backup.hexdigest()) == (text.count(b"\n"), sha.hexdigest())
    assert (framer.rows, framer.sha.hexdigest()) == (backup.rows, backup.hexdigest())


def test_large_objects_do_not_depend_on_their_order():
    a = feed(archive({}, {1: b"a", 2: b"b"}), [1 << 20]).large_objects
    b = feed(archive({}, {2: b"b", 1: b"a"}), [1 << 20]).large_objects
    c = feed(archive({}, {2: b"a", 1: b"b"}), [1 << 20]).large_objects
    assert (a.count, a.total) == (b.count, b.total) and a.total != c.total


def test_a_truncated_stream_is_refused():
    data = archive({("public", "t"): ROWS})
    fp = DumpFingerprinter()
    fp.feed(data[:-100])
    with pytest.raises(IntegrityError, match="ended inside"):
        fp.finish()


@pytest.mark.parametrize("data, match", [
    (b"PK\x03\x04" + bytes(40), "not a pg_dump custom-format archive"),
    (archive({}, compression=1), "compressed by pg_dump"),
    (archive({}, version=(1, 17)), "version 1.17 cannot be fingerprinted"),
])
def test_what_cannot_be_fingerprinted_is_refused(data, match):
    with pytest.raises(IntegrityError, match=match):
        DumpFingerprinter().feed(data)


def test_block_offsets_point_at_each_data_block_and_can_be_written_into_the_toc(tmp_path):
    from bvh_ops.logical.archive import set_data_offsets

    data = archive({("public", "t"): ROWS[:50], ("public", "u"): ROWS[:3]}, {7: b"blob"})
    fp = feed(data, [4096] * 1000)
    assert set(fp.block_offsets) == {10, 11, 99}
    for dump_id, at in fp.block_offsets.items():
        assert data[at] in (1, 3) and int.from_bytes(data[at + 2:at + 6], "little") == dump_id
    path = tmp_path / "copy"
    path.write_bytes(data)
    with path.open("r+b") as fh:
        assert set_data_offsets(fh, fp) == 3
    patched = path.read_bytes()
    assert len(patched) == len(data)
    again = feed(patched, [len(patched)])  # still a readable archive with the same data
    assert again.tables["public", "t"].hexdigest() == fp.tables["public", "t"].hexdigest()
    entry = next(e for e in again.entries.values() if e.dump_id == 10)
    assert patched[entry.offset_at] == 2
    assert int.from_bytes(patched[entry.offset_at + 1:entry.offset_at + 9], "little") == fp.block_offsets[10]


# -- against a straightforward reader ------------------------------------------------------------

def reference(data: bytes) -> tuple[dict[tuple[str, str], tuple[int, str]], tuple[int, int], dict[int, int]]:
    """The archive read the plain way, all in memory, one chunk at a time: each table's rows and
    framed digest of its COPY text (its chunks joined, pg_dump's end marker dropped, each line
    behind ROW_MARK), the large objects' count and sum, and where each data block starts."""
    from bvh_ops.logical.archive import LargeObjectDigest, read_toc

    _, entries, pos = read_toc(data)
    by_id = {e.dump_id: e for e in entries}

    def int4(at: int) -> tuple[int, int]:
        value = int.from_bytes(data[at + 1:at + 5], "little")
        return (-value if data[at] else value), at + 5

    def chunks(at: int) -> tuple[list[bytes], int]:
        out = []
        while True:
            n, at = int4(at)
            if n == 0:
                return out, at
            out.append(data[at:at + n])
            at += n

    tables, lobs, offsets = {}, LargeObjectDigest(), {}
    while pos < len(data):
        offsets[int4(pos + 1)[0]] = pos
        kind, (dump_id, pos) = data[pos], int4(pos + 1)
        if kind == 1:
            rows, pos = chunks(pos)
            if rows and rows[-1] == COPY_END:
                rows.pop()
            e = by_id[dump_id]
            lines = b"".join(rows).splitlines(keepends=True)
            tables[e.namespace, e.tag] = (len(lines), text_digest(lines))
            continue
        while True:
            oid, pos = int4(pos)
            if oid == 0:
                break
            parts, pos = chunks(pos)
            lobs.add(hashlib.sha256(b"%d:" % oid + b"".join(parts)).digest())
    return tables, (lobs.count, lobs.total), offsets


_TEXT = bytes(b"abc\t\\N0123456789 "[i % 16] for i in range(256))  # any byte -> a COPY text byte


def _rows(rng: random.Random, count: int, lengths: list[int]) -> list[bytes]:
    return [rng.randbytes(rng.choice(lengths) - 1).translate(_TEXT) + b"\n" for _ in range(count)]


def _tricky_archive() -> bytes:
    """Tables whose chunks cross 1 MiB buffers at every place: short rows (a header split across
    buffers, newline bytes inside headers: lengths 10, 266, 2570), long rows (hashed in place),
    a row longer than the join of a buffer's tail with the next, empty tables, a table larger
    than a buffer, a row larger than BIG_CHUNK, and large objects."""
    rng = random.Random(19)
    tables = {
        ("public", "short"): _rows(rng, 40000, [2, 5, 6, 10, 11, 40, 100, 266]),
        ("public", "empty"): [],
        ("public", "long"): _rows(rng, 400, [1500, 2570, 4000, 9000]),
        ("s", "mixed"): _rows(rng, 120, [3, 80, 2570, 70000, 200000]),
        ("public", "empty2"): [],
        ("public", "huge"): [b"h" * (BIG_CHUNK + 77) + b"\n", b"1\n", COPY_END[:-1] + b"x\n"],
        ("public", "tail"): _rows(rng, 9000, [7, 10, 64]),
    }
    return archive(tables, {16400: b"blob\n" * 3000, 16401: b""})


TRICKY = _tricky_archive()


@pytest.mark.parametrize("sizes", [
    [1 << 20],  # as the backup reads pg_dump
    [(1 << 20) + 1, (1 << 20) - 1, 1 << 20, (1 << 20) - 4, (1 << 20) + 3],  # buffers end inside headers
    [65536, 65537, 131072, 200000, 3 << 20],
    [1 << 22],
], ids=["1MiB", "odd MiB", "mixed", "4MiB"])
def test_the_fast_reader_matches_a_straightforward_one(sizes):
    rng = random.Random(len(sizes))
    sizes = [rng.choice(sizes) for _ in range(len(TRICKY) // min(sizes) + 2)]
    tables, lobs, offsets = reference(TRICKY)
    fp = feed(TRICKY, sizes)
    assert {k: (d.rows, d.hexdigest()) for k, d in fp.tables.items()} == tables
    assert (fp.large_objects.count, fp.large_objects.total) == lobs
    assert fp.block_offsets == offsets
    assert tables["public", "empty"] == (0, blake3(b"").hexdigest())
    # Its last chunk holds three lines: three rows, as a restored copy's text reads back.
    assert tables["public", "huge"][0] == 5


def test_every_split_of_a_chunk_header_across_two_buffers():
    data = archive({("public", "t"): [b"%d\n" % i for i in range(300)] + [b"x" * 2569 + b"\n"] * 3})
    tables, _, _ = reference(data)
    start = data.index(b"0\n") - 5  # the first row's header
    for cut in range(start, start + 200):
        fp = feed(data, [cut, len(data)])
        assert {k: (d.rows, d.hexdigest()) for k, d in fp.tables.items()} == tables, cut


@pytest.mark.parametrize("first", [b"\nab\n", b"ab\n\n", b"a\nb\n", b"\n\n", b"12345678\n\n"])
def test_a_first_chunk_of_several_lines_before_one_line_chunks_is_framed_by_lines(first):
    # The fast reader's cheap proof (every later newline ends a chunk) leaves only the first
    # chunk to check for a newline of its own, at any place in it. The first buffer ends inside
    # the table (before pg_dump's end marker, whose three lines take the other proof).
    rows = [first] + [b"%d\n" % i for i in range(200)] + [b"x" * 9 + b"\n"]
    data = archive({("public", "t"): rows})
    tables, _, _ = reference(data)
    at = data.index(first)
    for sizes in ([at + len(first) + 40, len(data)], [at + 300, len(data)], [len(data)]):
        fp = feed(data, sizes)
        assert {k: (d.rows, d.hexdigest()) for k, d in fp.tables.items()} == tables
    assert tables["public", "t"][0] == len(rows) + first.count(b"\n") - 1


# -- the C chunk walker ------------------------------------------------------------------------

def test_the_install_built_the_c_walker_where_a_compiler_is():
    """setup.py builds it optionally: a failed build must not pass unnoticed where it can build."""
    import shutil
    import sysconfig
    from pathlib import Path

    if not shutil.which("cc") or not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        pytest.skip("no C compiler or Python headers here: the numpy walker is the one in use")
    assert archive_mod.WALKER == "c", "the C chunk walker was not built: run `pip install -e .` again"


def _chunks(rows: list[bytes]) -> bytes:
    return b"".join(b"\x00" + len(r).to_bytes(4, "little") + r for r in rows)


@pytest.mark.skipif(archive_mod.WALKER != "c", reason="the C walker is not built here")
def test_the_c_walk_stops_before_any_chunk_it_cannot_prove_holds_one_row():
    from bvh_ops.logical._chunkwalk import walk

    good = [b"1\tab\n", b"x" * 9 + b"\n", b"\n"]  # a length of 10: a newline byte in its header
    head = _chunks(good)
    for bad, why in [(b"\x00\x00\x00\x00\x00", "the block's end"),
                     (_chunks([COPY_END]), "the end marker's three lines"),
                     (_chunks([b"a\nb\n"]), "two rows in one chunk"),
                     (_chunks([b"no newline"]), "no newline at its end"),
                     (b"\x01" + (3).to_bytes(4, "little") + b"ab\n", "a negative length"),
                     (_chunks([b"abc\n"])[:-1], "a chunk cut by the window")]:
        data = b"junk" + head + bad
        out = bytearray(len(data))
        end, rows = walk(data, 4, len(data), out)
        assert (end, rows) == (4 + len(head), 3), why
        assert bytes(out[:end - 4]) == b"".join(ROW_MARK + r for r in good), why
        assert walk(data, end, len(data), None) == (end, 0), why
    # Without out it only walks; bounds and a short out are refused, not read past.
    assert walk(head, 0, len(head), None) == (len(head), 3)
    with pytest.raises(ValueError, match="within the buffer"):
        walk(head, 0, len(head) + 1, None)
    with pytest.raises(ValueError, match="shorter"):
        walk(head, 0, len(head), bytearray(len(head) - 1))
    with pytest.raises(BufferError, match="not writable"):
        walk(head, 0, len(head), b"read-only")


def test_each_walker_gives_the_same_digests_over_pg_dump_like_rows(walker):
    """pgbench-like rows (a few fields and padding) through each walker (the fixture's)."""
    rng = random.Random(5)
    rows = [b"%d\t%d\t%d\t%s\n" % (i, i // 100, rng.randint(-5000, 5000), b" " * 84) for i in range(60000)]
    data = archive({("public", "pgbench_accounts"): rows})
    fp = feed(data, [1 << 20] * 20)
    assert (fp.tables["public", "pgbench_accounts"].rows,
            fp.tables["public", "pgbench_accounts"].hexdigest()) == (len(rows), text_digest(rows)), walker
    assert fp.slow_frames <= 3, walker  # only the end marker (and a row split at a buffer's end)


def test_a_large_toc_is_parsed_a_few_times_not_once_per_chunk(monkeypatch):
    """A database of many tables has a TOC of many MB; fed in 1 MiB chunks it was parsed again
    after every chunk (quadratic: minutes for 100,000 tables, on the backup's critical path).
    The buffer is tried again only once it has doubled; the digests are the same, and a TOC
    whole in the last chunk fed is still read at the end."""
    import io

    from bvh_ops.logical.restore import _read_toc_entries

    tables = {("public", f"t{i}"): [b"%d\n" % i] for i in range(4000)}
    data = archive(tables)
    calls = []
    real = archive_mod.read_toc

    def counting(buf, *a, **k):
        calls.append(len(buf))
        return real(buf, *a, **k)

    monkeypatch.setattr(archive_mod, "read_toc", counting)
    size = 1024
    fp = feed(data, [size] * (len(data) // size + 1))
    toc_chunks = len(data) // size  # nearly all of it is TOC
    assert len(calls) <= 2 * toc_chunks.bit_length() + 2 < toc_chunks // 10
    assert len(fp.tables) == 4000 and fp.tables[("public", "t7")].hexdigest() == text_digest([b"7\n"])
    calls.clear()
    whole = DumpFingerprinter()
    whole.feed(data[:1000])  # tried, too short: the next try waits for twice as much …
    whole.feed(data[1000:])  # … which this is: tried and read
    whole.finish()
    assert len(whole.tables) == 4000 and len(calls) == 2
    # the restore's reader of a TOC (the drill's copy, --table) doubles what it reads, too
    import bvh_ops.logical.restore as restore_mod

    monkeypatch.setattr(restore_mod, "read_toc", counting)
    monkeypatch.setattr(restore_mod, "CHUNK", size)
    calls.clear()
    assert len(_read_toc_entries(io.BytesIO(data).read, "x")) == 4001
    assert len(calls) <= toc_chunks.bit_length() + 2
