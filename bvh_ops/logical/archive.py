"""pg_dump's custom archive format read as it streams past (header, TOC, then one data block per
entry with data), so every table is fingerprinted from the COPY text the dump itself carries:
the production server reads each table once (docs/FORMAT.md, "Table fingerprints", versions 3 and 2).

Layout (PostgreSQL's pg_backup_archiver.c and pg_backup_custom.c; archive versions 1.14
(pg_dump 15) to 1.16 (pg_dump 17 and 18)): "PGDMP", major, minor, revision, intSize, offSize,
format (1 = custom), compression (1.15+: one byte, the algorithm; before: an int, the level),
seven ints of creation time, database name, server version, pg_dump version, then the TOC: an int
count and per entry dumpId, hadDumper, tableoid, oid, tag, desc, section, defn, dropStmt,
copyStmt, namespace, tablespace, tableam, relkind (1.16+), owner, withOids, dependencies (strings
up to a NULL) and the data offset (a flag byte and offSize bytes). Then the data blocks: a type
byte (1 = data, 3 = large objects), the dumpId, and chunks (an int length, the bytes) up to a zero
length; large objects: per object its oid, then chunks up to a zero length, up to an oid of zero.
An int is a sign byte and intSize little-endian bytes; a string an int length (-1: NULL) and bytes.

With ``--compress=0`` pg_dump writes one chunk per COPY row (and a last chunk ``\\.\\n\\n\\n``), so
a table's rows are found over up to ``WINDOW`` bytes at a time: by a walk in C where it was built
at install (``_chunkwalk.c``, ``_frames_walk``: the chunks followed one by one, each proven to hold
one row), else with numpy (``_frames_fast``: whole-buffer passes); a row-by-row Python walk
(``_frames_slow``) runs only where those cannot prove the chunk boundaries (the end marker, a row
split across two buffers). ``WALKER`` says which is in use.
The buffers fed in are read in place, never copied (only an unread tail is joined with the next
buffer's first bytes). Memory: the current buffer, a ``WINDOW``-sized mask and copy, plus at most one row
below ``BIG_CHUNK``; larger chunks are hashed as they pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from bvh_ops.errors import IntegrityError
from bvh_ops.pg.fingerprint import BLAKE3, ROW_MARK, copy_hash, frame_rows

MAGIC = b"PGDMP"
K_VERS_1_15 = (1, 15)
K_VERS_1_16 = (1, 16)
NEWEST = K_VERS_1_16  # the newest layout this reader knows (pg_dump 17 and 18)
BLK_DATA = 1
BLK_BLOBS = 3
# The end-of-data marker pg_dump writes as the last COPY chunk of every table ("\.", blank lines).
COPY_END = b"\\.\n\n\n"
# Fingerprints 3 and 4: the end marker as framed (each of its three lines a row with its mark).
FRAMED_END = b"".join(ROW_MARK + line for line in COPY_END.splitlines(keepends=True))
# Chunks at least this long are hashed as they arrive instead of waiting for the whole chunk.
BIG_CHUNK = 1 << 20
# The size the stream is usually fed in (bvh_ops.logical.backup reads pg_dump's stdout so).
READ_SIZE = 1 << 20
# The fast path reads at most this much of a buffer at a time: its passes stay in the core's cache.
WINDOW = 1 << 19
# An unread tail up to this long is joined with the next buffer's first bytes, not the whole buffer.
JOIN = 1 << 16
SECTION_POST_DATA = 4

try:  # built by setup.py at install where a C compiler is found (optional there)
    from bvh_ops.logical._chunkwalk import walk as _walk
except ImportError:  # pragma: no cover - depends on the install
    _walk = None
WALKER = "c" if _walk is not None else "numpy"


class NeedMore(Exception):
    """The buffer ends inside the item being read: feed more bytes."""


@dataclass(frozen=True)
class TocEntry:
    dump_id: int
    desc: str
    namespace: str
    tag: str
    defn: str
    had_dumper: bool
    offset_at: int = 0  # where the entry's data offset (flag byte + offSize bytes) sits in the archive
    deps: tuple[int, ...] = ()  # the dumpIds this entry depends on (a constraint: its table's)
    section: int = 0  # pg_backup.h: 2 pre-data, 3 data, 4 post-data
    copy_stmt: str = ""  # a TABLE DATA entry's "COPY schema.table (columns) FROM stdin;"


@dataclass
class CopyDigest:
    """Rows and BLAKE3 digest of one table's COPY text (without pg_dump's end marker), each row
    behind ROW_MARK (fingerprints 4: ``frame_rows``)."""

    rows: int = 0
    sha: object = field(default_factory=lambda: copy_hash(BLAKE3))
    _hold: bytes = b""
    _row_start: bool = True  # the next byte begins a row, so its mark is due

    def update(self, data) -> None:
        """COPY text as it comes (any boundaries)."""
        text = bytes(data)
        if text:
            self.rows += text.count(b"\n")
            self._add(frame_rows(text, self._row_start))
            self._row_start = text[-1] == 10

    def update_framed(self, framed, rows: int) -> None:
        """``rows`` whole rows already framed (each one's mark in place of its chunk header)."""
        mv = memoryview(framed).cast("B")
        self._add(mv if self._row_start else mv[len(ROW_MARK):])  # a row begun earlier: no mark
        self._row_start = True
        self.rows += rows

    def _add(self, data) -> None:
        # The last bytes are held back: the end marker is dropped once the block ends.
        mv = memoryview(data).cast("B")
        keep = len(FRAMED_END)
        if len(mv) >= keep:
            self.sha.update(self._hold)
            self.sha.update(mv[:len(mv) - keep])
            self._hold = bytes(mv[len(mv) - keep:])
        else:
            joined = self._hold + bytes(mv)
            self.sha.update(joined[:max(0, len(joined) - keep)])
            self._hold = joined[max(0, len(joined) - keep):]

    def finish(self) -> None:
        if self._hold == FRAMED_END:
            self.rows -= COPY_END.count(b"\n")
        else:
            self.sha.update(self._hold)
        self._hold = b""

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


@dataclass
class LargeObjectDigest:
    """Count and order-independent sum of sha256("<oid>:" + data) (first 8 bytes, mod 2**64)."""

    count: int = 0
    total: int = 0

    def add(self, digest: bytes) -> None:
        self.count += 1
        self.total = (self.total + int.from_bytes(digest[:8], "big")) % (1 << 64)


class _Reader:
    """Archive ints and strings over ``buf`` from ``pos``; raises NeedMore at the end."""

    def __init__(self, buf: bytes, pos: int, int_size: int, encoding: str = "utf-8") -> None:
        self.buf, self.pos, self.int_size, self.encoding = buf, pos, int_size, encoding

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            raise NeedMore
        self.pos += 1
        return self.buf[self.pos - 1]

    def int(self) -> int:
        end = self.pos + 1 + self.int_size
        if end > len(self.buf):
            raise NeedMore
        sign = self.buf[self.pos]
        value = int.from_bytes(self.buf[self.pos + 1:end], "little")
        self.pos = end
        return -value if sign else value

    def str(self) -> str | None:
        n = self.int()
        if n < 0:
            return None
        if self.pos + n > len(self.buf):
            raise NeedMore
        self.pos += n
        return self.buf[self.pos - n:self.pos].decode(self.encoding, "replace")

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise NeedMore
        self.pos += n


def read_toc(buf: bytes, encoding: str | None = None) -> tuple[dict, list[TocEntry], int]:
    """Header facts, TOC entries and the offset of the first data block; NeedMore if ``buf``
    does not hold the whole TOC yet. pg_dump writes the TOC's names in the dump's own encoding
    (its ENCODING entry): they are decoded in it, so that a LATIN1 dump's "café" is the table
    the database calls café (``encoding``: the Python codec, found on a first pass)."""
    if len(buf) < 11:
        raise NeedMore
    if buf[:5] != MAGIC:
        raise IntegrityError("the dump stream is not a pg_dump custom-format archive (no PGDMP header)")
    version = (buf[5], buf[6])
    int_size, off_size = buf[8], buf[9]
    if not (1, 12) <= version <= NEWEST or int_size not in (4, 8):
        raise IntegrityError(f"pg_dump archive version {version[0]}.{version[1]} cannot be fingerprinted: bvh-ops "
                             f"reads 1.12 to {NEWEST[0]}.{NEWEST[1]} (pg_dump 15 to 18); use a pg_dump of those "
                             "versions (pg_bin_dir) or a bvh-ops that knows the newer format")
    r = _Reader(buf, 10, int_size, encoding or "utf-8")
    if r.byte() != 1:
        raise IntegrityError("the dump stream is not in pg_dump's custom format")
    compression = r.byte() if version >= K_VERS_1_15 else r.int()
    if compression != 0:
        raise IntegrityError("the dump is compressed by pg_dump: fingerprints need --compress=0")
    for _ in range(7):  # creation time
        r.int()
    facts = {"version": f"{version[0]}.{version[1]}", "int_size": int_size, "off_size": off_size, "database": r.str(),
             "server_version": r.str(), "pg_dump_version": r.str()}
    entries = []
    for _ in range(r.int()):
        dump_id, had_dumper = r.int(), r.int()
        r.str()  # tableoid
        r.str()  # oid
        tag, desc = r.str() or "", r.str() or ""
        section = r.int()
        defn = r.str() or ""
        r.str()  # dropStmt
        copy_stmt = r.str() or ""
        namespace = r.str() or ""
        r.str()  # tablespace
        r.str()  # tableam
        if version >= K_VERS_1_16:
            r.int()  # relkind
        r.str()  # owner
        r.str()  # withOids
        deps = []
        while (dep := r.str()) is not None:  # dependencies
            deps.append(int(dep) if dep.isdigit() else 0)
        offset_at = r.pos
        r.skip(1 + off_size)  # data offset
        entries.append(TocEntry(dump_id, desc, namespace, tag, defn, bool(had_dumper), offset_at, tuple(deps), section,
                                copy_stmt))
    if encoding is None:
        codec = dump_codec(entries)
        if codec != "utf-8":
            return read_toc(buf, codec)
    return facts, entries, r.pos


def dump_encoding(entries: list[TocEntry]) -> str | None:
    """The client encoding pg_dump wrote in (its ENCODING entry: "SET client_encoding = 'X';")."""
    for e in entries:
        if e.desc == "ENCODING" and "'" in e.defn:
            return e.defn.split("'")[1]
    return None


def dump_codec(entries: list[TocEntry]) -> str:
    """The Python codec of the dump's encoding; UTF-8 where Python has none (EUC_TW,
    MULE_INTERNAL) or the dump has no encoding (SQL_ASCII: bytes as they came, read as UTF-8)."""
    return codec_of(dump_encoding(entries))


def codec_of(name: str | None) -> str:
    """The Python codec of PostgreSQL encoding ``name`` (as dump_codec)."""
    from psycopg import NotSupportedError
    from psycopg._encodings import pg2pyenc

    try:
        codec = pg2pyenc(name.encode()) if name else "utf-8"
    except NotSupportedError:
        return "utf-8"
    return "utf-8" if codec == "ascii" else codec


class DumpFingerprinter:
    """Feed it the archive as it streams; afterwards ``tables`` maps (schema, table) of every
    TABLE DATA entry to its CopyDigest and ``large_objects`` holds the large objects' digest."""

    def __init__(self, *, digests: bool = True, walker: str | None = None, rows=None) -> None:
        self.digests = digests  # False: only walk the blocks (their offsets), hash nothing
        # rows(entry, entries, encoding) -> a sink for that TABLE DATA entry's rows or None
        # (bvh_ops.drill.dumpside: the drill's PITR sums, from the C walk only)
        self._rows_for = rows
        self._rowsink = None
        walker = walker or WALKER
        if walker not in ("c", "numpy") or (walker == "c" and _walk is None):
            raise ValueError(f"no {walker!r} chunk walker here (built: {WALKER})")
        self._frames = self._frames_walk if walker == "c" else self._frames_fast
        self.block_offsets: dict[int, int] = {}  # dumpId -> archive offset of its data block
        self._base = 0  # archive offset of self._buf[0]
        self.facts: dict = {}
        self.entries: dict[int, TocEntry] = {}
        self.tables: dict[tuple[str, str], CopyDigest] = {}
        self.large_objects = LargeObjectDigest()
        self.encoding: str | None = None
        self._buf = b""
        self._pos = 0
        self._state = "head"
        self._head: list[bytes] = []  # chunks gathered while the TOC is incomplete (feed)
        self._head_len = 0
        self._head_retry = 0  # the gathered TOC is parsed again once the buffer is this long
        self._int = 4
        self._sink: CopyDigest | None = None
        self._remaining = 0  # bytes of the current chunk still to come (a big chunk, or a large object's)
        self._lo_sha = None
        self._lo_oid = 0
        self.slow_frames = 0  # chunks walked one by one (for the benchmark's breakdown)
        self._mask = np.empty(0, dtype=bool)
        self._copy = np.empty(0, dtype=np.uint8)

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        chunk = chunk if type(chunk) is bytes else bytes(chunk)
        if self._state == "head":
            # The header and TOC (tens of MB for a database of 100,000 tables) are parsed whole:
            # gather the chunks and try again only once what is gathered has doubled, so a large
            # TOC is parsed a few times instead of once per chunk (quadratic in its size).
            self._head.append(chunk)
            self._head_len += len(chunk)
            if len(self._buf) - self._pos + self._head_len < self._head_retry:
                return
            self._base += self._pos
            self._buf, self._pos = self._buf[self._pos:] + b"".join(self._head), 0
            self._head.clear()
            self._head_len = 0
            self._run()
            return
        rest = len(self._buf) - self._pos
        if 0 < rest <= JOIN and len(chunk) > 2 * JOIN:
            # Join only the unread tail (usually part of one row) with the chunk's start; once the
            # tail is read, go on in the chunk itself: the 1 MiB buffers are never copied.
            self._base += self._pos
            self._buf, self._pos = self._buf[self._pos:] + chunk[:JOIN], 0
            self._run()
            if self._pos >= rest:
                self._base += rest
                self._buf, self._pos = chunk, self._pos - rest
                self._run()
                return
            chunk = chunk[JOIN:]  # an item longer than the join (the TOC, a long row): join it all
        self._base += self._pos
        self._buf = self._buf[self._pos:] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0
        self._run()

    def _run(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except NeedMore:
                return

    def finish(self) -> None:
        """The stream ended: it must end between blocks."""
        if self._state == "head" and self._head:  # gathered, not tried yet: try it now
            self._head_retry = 0
            self.feed(b"")
        if self._state != "block" or self._pos != len(self._buf):
            raise IntegrityError(f"the dump stream ended inside its {'header' if self._state == 'head' else 'data'}"
                                 " (pg_dump stopped early?)")

    # -- the state machine -----------------------------------------------------------------
    def _step(self) -> bool:
        """Consume one item; False when the buffer is used up."""
        state = self._state
        if state == "head":
            try:
                facts, entries, pos = read_toc(self._buf)
            except NeedMore:
                self._head_retry = 2 * len(self._buf)
                raise
            self.facts, self._int, self._pos = facts, facts["int_size"], pos
            self.entries = {e.dump_id: e for e in entries}
            self.encoding = dump_encoding(entries)
            self._state = "block"
            return True
        if self._pos >= len(self._buf):
            return False
        if state == "block":
            r = _Reader(self._buf, self._pos, self._int)
            kind, dump_id = r.byte(), r.int()
            self.block_offsets[dump_id] = self._base + self._pos
            self._pos = r.pos
            entry = self.entries.get(dump_id)
            if kind == BLK_DATA:
                self._sink = None
                if self.digests and entry is not None and entry.desc == "TABLE DATA":
                    self._sink = self.tables.setdefault((entry.namespace, entry.tag), CopyDigest())
                if (self._rows_for is not None and entry is not None and entry.desc == "TABLE DATA"
                        and self._frames == self._frames_walk):
                    self._rowsink = self._rows_for(entry, self.entries, self.encoding)
                self._state = "frames"
            elif kind == BLK_BLOBS:
                self._state = "lo_oid"
            else:
                raise IntegrityError(f"unknown block type {kind} in the dump stream")
            return True
        if state == "frames":
            return self._frames() or self._frames_slow()
        if state == "chunk":  # the rest of a big COPY chunk
            take = min(self._remaining, len(self._buf) - self._pos)
            if self._sink is not None:
                self._sink.update(memoryview(self._buf)[self._pos:self._pos + take])
            if self._rowsink is not None:
                self._rowsink.piece(memoryview(self._buf)[self._pos:self._pos + take])
            self._pos += take
            self._remaining -= take
            if not self._remaining:
                self._state = "frames"
            return True
        if state == "lo_oid":
            r = _Reader(self._buf, self._pos, self._int)
            oid = r.int()
            self._pos = r.pos
            if oid == 0:
                self._state = "block"
            else:
                self._lo_oid, self._lo_sha = oid, hashlib.sha256(b"%d:" % oid) if self.digests else None
                self._state = "lo_chunk"
            return True
        if state == "lo_chunk":
            r = _Reader(self._buf, self._pos, self._int)
            n = r.int()
            self._pos = r.pos
            if n == 0:
                if self._lo_sha is not None:
                    self.large_objects.add(self._lo_sha.digest())
                self._state = "lo_oid"
            else:
                self._remaining = n
                self._state = "lo_data"
            return True
        if state == "lo_data":
            take = min(self._remaining, len(self._buf) - self._pos)
            if self._lo_sha is not None:
                self._lo_sha.update(memoryview(self._buf)[self._pos:self._pos + take])
            self._pos += take
            self._remaining -= take
            if not self._remaining:
                self._state = "lo_chunk"
            return True
        raise AssertionError(state)

    def _end_block(self) -> None:
        if self._sink is not None:
            self._sink.finish()
        if self._rowsink is not None:
            self._rowsink.finish()
        self._sink = self._rowsink = None
        self._state = "block"

    def _frames_slow(self) -> bool:
        """One COPY chunk, read the plain way."""
        r = _Reader(self._buf, self._pos, self._int)
        n = r.int()
        if n == 0:
            self._pos = r.pos
            self._end_block()
            return True
        avail = len(self._buf) - r.pos
        if n > avail and n < BIG_CHUNK:
            raise NeedMore
        self.slow_frames += 1
        take = min(n, avail)
        if self._sink is not None:
            self._sink.update(memoryview(self._buf)[r.pos:r.pos + take])
        if self._rowsink is not None:
            self._rowsink.piece(memoryview(self._buf)[r.pos:r.pos + take])
        self._pos = r.pos + take
        if take < n:
            self._remaining = n - take
            self._state = "chunk"
        return True

    def _frames_walk(self) -> bool:
        """Every whole one-row COPY chunk in the window, followed in C (``_chunkwalk.walk``), which
        also writes them framed (each length zeroed) into the reused copy that is hashed."""
        if self._int != 4:
            return False
        buf, start = self._buf, self._pos
        stop = start + min(len(buf) - start, WINDOW)
        out = None
        if self._sink is not None:
            if len(self._copy) < stop - start:
                self._copy = np.empty(max(stop - start, WINDOW), dtype=np.uint8)
            out = self._copy
        end, rows = _walk(buf, start, stop, out)
        if not rows:
            return False
        if out is not None:
            self._sink.update_framed(out[:end - start], rows)
        if self._rowsink is not None:
            self._rowsink.chunks(buf, start, end)
        self._pos = end
        return True

    def _frames_fast(self) -> bool:
        """Every whole COPY chunk in the buffer at once. Each chunk is one row ending in a
        newline and COPY text holds no other newline, so chunk ends are among the buffer's
        newlines: usually each newline is followed by the header (sign byte, 4-byte length) of
        a chunk that ends at the next newline, checked for all of them at once; where a newline
        lies inside a header, ``_path`` follows the headers. Exact: a newline inside a header is
        never on the path. The rows are then hashed, framed (``_hash_rows``)."""
        if self._int != 4:
            return False
        buf, start = self._buf, self._pos
        n = min(len(buf) - start, WINDOW)
        if n < 6 or buf[start] != 0:
            return False
        e0 = 4 + int.from_bytes(buf[start + 1:start + 5], "little")
        if e0 == 4 or e0 >= n or buf[start + e0] != 10:
            return False
        a = np.frombuffer(buf, dtype=np.uint8, count=n, offset=start)
        nl = np.flatnonzero(np.equal(a[e0:], 10, out=self._scratch(n - e0)))
        nl += e0
        k = int(np.searchsorted(nl, n - 5))  # newlines followed by a whole chunk header
        sign = a[nl[:k] + 1]
        # The lengths read in place: a little-endian uint32 view with a stride of one byte.
        length = np.ndarray((n - 3,), dtype="<u4", buffer=buf, offset=start, strides=(1,))[nl[:k] + 2]
        target = nl[:k] + 5 + length.astype(np.int64)
        # Usually every newline ends a chunk and points at the next newline: the path is a prefix.
        m = min(k, len(nl) - 1)
        good = (sign[:m] == 0) & (target[:m] == nl[1:m + 1])
        j = int(np.argmin(good)) if m and not good.all() else m
        if j >= k or length[j] == 0 or target[j] >= n:
            ends = nl[:j + 1]
            # Every newline from the first chunk's end on ends a chunk: the later chunks hold one
            # row each (and no header holds a newline); only the first chunk's row is left to prove.
            seen = 0 if np.count_nonzero(a[5:e0] == 10) else None
        else:
            ends = nl[self._path(a, nl, k, sign, length, target)]
            seen = 0
        last = int(ends[-1])
        if self._sink is not None:
            if seen is not None:
                # Newline bytes up to the last chunk's end, headers included: counted from ``nl``.
                seen = int(np.count_nonzero(a[:e0] == 10)) + int(np.searchsorted(nl, last)) + 1
            self._hash_rows(a, ends, seen)
        self._pos = start + last + 1
        return True

    def _scratch(self, n: int) -> np.ndarray:
        """A reused bool array of ``n`` items (no fresh pages for every buffer)."""
        if len(self._mask) < n:
            self._mask = np.empty(max(n, WINDOW), dtype=bool)
        return self._mask[:n]

    def _hash_rows(self, a: np.ndarray, ends: np.ndarray, seen: int | None) -> None:
        """The rows of the chunks from ``a[0]`` to the newlines ``ends``, framed: a copy with each
        chunk's 5-byte header zeroed — the header lies exactly where the row's mark goes — hashed
        as it is, once the copy shows one newline per chunk (each chunk one row: ``seen``, the
        newline bytes in ``a`` up to the last end, less those in the headers; None: already
        proven); otherwise (pg_dump's end marker holds three lines) the headers are dropped by a
        mask and the text framed by lines."""
        last = int(ends[-1])
        if len(self._copy) < last + 1:
            self._copy = np.empty(max(last + 1, WINDOW), dtype=np.uint8)
        framed = self._copy[:last + 1]
        np.copyto(framed, a[:last + 1])
        starts = ends[:-1] + 1
        # Every header on the path has a zero sign byte (checked): only its four length bytes
        # are zeroed, one unaligned uint32 store each; the newline bytes among them are counted.
        in_heads = int(np.count_nonzero(framed[1:5] == 10)) if seen is not None else 0
        framed[:5] = 0
        if len(starts):
            lengths = np.ndarray((last - 2,), dtype="<u4", buffer=self._copy, strides=(1,))
            if seen is not None:
                heads = lengths[starts + 1]
                for shift in (0, 8, 16, 24):
                    in_heads += int(np.count_nonzero((heads >> shift) & 0xFF == 10))
            lengths[starts + 1] = 0
        if seen is None or seen - in_heads == len(ends):
            self._sink.update_framed(framed, len(ends))
            return
        keep = self._scratch(last + 1)
        keep.fill(True)
        keep[:5] = False
        for d in range(5):
            keep[starts + d] = False
        self._sink.update(a[:last + 1][keep])

    @staticmethod
    def _path(a, nl, k, sign, length, target) -> np.ndarray:
        """Newlines on the chunk path from the first one, where some newline lies inside a
        chunk header: link each newline to the newline its header points at and follow the
        links by pointer doubling (log2(rows) numpy passes)."""
        n = len(a)
        jump = np.arange(len(nl), dtype=np.int64)  # a newline that leads nowhere points at itself
        ok = (sign == 0) & (length > 0) & (target < n)
        ok[ok] = a[target[ok]] == 10
        idx = np.flatnonzero(ok)
        jump[idx] = np.searchsorted(nl, target[idx])
        on_path = np.zeros(len(nl), dtype=bool)
        on_path[0] = True
        for _ in range(int(len(nl)).bit_length()):
            on_path[jump[on_path]] = True
            jump = jump[jump]
        return on_path


# pg_backup_archiver.h: the data offset's flag once the position is known.
K_OFFSET_POS_SET = 2


def set_data_offsets(fh, fp: DumpFingerprinter) -> int:
    """Write the data blocks' offsets into the TOC of an archive file that pg_dump wrote to a
    pipe (which leaves them unset): same-size fields, so ``pg_restore --jobs`` seeks straight to
    each table's data instead of every worker scanning the chunks before it. Returns how many."""
    size = fp.facts["off_size"]
    done = 0
    for entry in fp.entries.values():
        at = fp.block_offsets.get(entry.dump_id)
        if at is None or not entry.offset_at:
            continue
        fh.seek(entry.offset_at)
        fh.write(bytes([K_OFFSET_POS_SET]) + at.to_bytes(size, "little"))
        done += 1
    return done
