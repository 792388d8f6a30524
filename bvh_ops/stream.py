"""The streaming pipeline: plaintext -> zstd -> AES-256-GCM STREAM segments -> sink, with sha256
of the plaintext and of the stored bytes computed on the way. Memory is bounded by one segment
plus zstd's window, never by the size of the stream. The layout is specified in docs/FORMAT.md.

STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015): every segment's nonce carries its index and a
last-segment flag, so dropping, reordering, swapping or truncating segments fails authentication.

Every object is *bound* to where it belongs: its header carries ``bind`` (the object's key in the
repository, e.g. ``backups/<id>/dump.pgc`` or ``wal/00000001/<segment>``), the header is the
associated data of every segment, and readers name the key they expect: an object copied or
swapped to another place fails before a byte of its plaintext is used.

Format 3 keeps the data-key envelopes *outside* the object (in the backup's signed manifest, the
WAL file's or log archive's index entry, the file sets' data-key record): the header, which is
the associated data of every segment, names only the data key (``dk``, a commitment to it), so
re-sealing the data key to new recipients never touches the object. Format 2 objects (envelopes
in the header) are still read.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bvh_ops.errors import CryptoError
from bvh_ops.keys import Identity, Recipient

MAGIC = b"BVHOPS\x00\x01"
TAG_LEN = 16
SALT_LEN = 32
PREFIX_LEN = 7
HKDF_INFO = b"bvh-ops/v1/stream"
MAX_HEADER = 1 << 20
FORMAT_VERSION = 3  # 2: the header binds the object to its key; 3: envelopes outside the object
READ_VERSIONS = (2, 3)
DK_INFO = b"bvh-ops/v3/data-key-id"


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class StreamStats:
    """What the manifest records for one object: the plaintext's digest in ``plaintext_sha256``
    or ``plaintext_blake3`` (the other empty), as the writer's ``plain_hash`` chose."""

    plaintext_sha256: str
    plaintext_size: int
    stored_sha256: str
    stored_size: int
    plaintext_blake3: str = ""

    @property
    def plaintext_digest(self) -> tuple[str, str]:
        """(algorithm, hex), as ObjectEntry.plaintext_digest."""
        return recorded_digest(self.plaintext_blake3, self.plaintext_sha256)


def recorded_digest(blake3: str | None, sha256: str | None) -> tuple[str, str]:
    """(algorithm, hex) a recorded plaintext is checked against: BLAKE3 where one is recorded
    (a manifest's objects since 2026-11-29, WAL entries with ``wal_digest = blake3``), else sha256
    (everything older, and what records only sha256: log archives, file sets)."""
    return ("blake3", blake3) if blake3 else ("sha256", sha256 or "")


def plain_hash(alg: str):
    """A fresh hash for an object's plaintext: "blake3" (backups' dump and base objects since
    2026-11-29: 4× less CPU than sha256 here, docs/FORMAT.md) or "sha256" (everything else);
    also the hash of fingerprints 4 (BLAKE3) and 2-3 (sha256), bvh_ops.pg.fingerprint.copy_hash."""
    if alg == "blake3":
        from blake3 import blake3

        return blake3()
    if alg == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown plaintext hash {alg!r}")


@dataclass(frozen=True)
class Envelope:
    """The data key sealed to one recipient (HPKE enc || ciphertext)."""

    key_id: str
    kem: str
    sealed: bytes

    def to_json(self) -> dict[str, str]:
        return {"kid": self.key_id, "kem": self.kem, "sealed": base64.b64encode(self.sealed).decode()}


    @classmethod
    def from_json(cls, doc: dict) -> Envelope:
        try:
            return cls(str(doc["kid"]), str(doc["kem"]), base64.b64decode(doc["sealed"], validate=True))
        except Exception:
            raise CryptoError("malformed data-key envelope") from None


def seal_data_key(data_key: bytes, recipients: list[Recipient]) -> list[Envelope]:
    return [Envelope(r.key_id, r.kem, r.seal(data_key)) for r in recipients]


def envelopes_json(envelopes: list[Envelope]) -> list[dict[str, str]]:
    return [e.to_json() for e in envelopes]


def envelopes_from_json(docs: list[dict] | None) -> list[Envelope]:
    return [Envelope.from_json(d) for d in docs or ()]


def entry_envelopes(entry: dict) -> list[Envelope]:
    """A format-3 object's envelopes from its index entry (WAL file, log archive). While a key
    rotation rewrites a format-2 object in place, the entry's ``rewrite`` holds the envelopes of
    the format-3 object that replaces it (the old object carries its own in its header)."""
    return envelopes_from_json(entry.get("envelopes") or (entry.get("rewrite") or {}).get("envelopes"))


def data_key_id(data_key: bytes) -> str:
    """A format-3 header's ``dk``: HKDF-SHA256(data_key, salt = "", info = "bvh-ops/v3/data-key-id",
    L = 16), hex. Names the data key (objects sharing one, such as a file-set run's chunks, share
    it) and commits to it: an envelope that opens to another key is refused before decrypting."""
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=DK_INFO).derive(data_key).hex()


def _derive(data_key: bytes, salt: bytes) -> tuple[AESGCM, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=32 + PREFIX_LEN, salt=salt, info=HKDF_INFO).derive(data_key)
    return AESGCM(okm[:32]), okm[32:]


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 1 << 32:
        raise CryptoError("stream too long: more than 2^32 segments")
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


class _HashingSink:
    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        self._sink.write(data)


class EncryptingWriter:
    """Write plaintext; ``close()`` flushes, writes the last segment and returns the stats.

    Stacked once, in this order: plaintext hash -> zstd -> STREAM AEAD -> stored hash -> sink.
    """

    def __init__(
        self,
        *,
        sink: Sink,
        data_key: bytes,
        envelopes: list[Envelope] | None = None,
        compression_level: int = 3,
        segment_size: int = 1 << 20,
        compression_threads: int = 0,
        bind: str,
        format_version: int = FORMAT_VERSION,
        plain_hash_alg: str = "sha256",
    ) -> None:
        """Format 3 (the default): ``envelopes`` stay with the caller, who records them beside the
        object (manifest, index entry); format 2 (``format_version=2``, kept to write test fixtures
        of older repositories) puts them in the header. ``plain_hash_alg``: the plaintext's
        digest (``plain_hash``)."""
        if not bind:
            raise ValueError("an object must be bound to its repository key")
        if format_version not in READ_VERSIONS:
            raise ValueError(f"cannot write format {format_version}")
        if format_version == 2 and not envelopes:
            raise ValueError("a format-2 object needs its envelopes")
        self._out = _HashingSink(sink)
        self._plain_alg = plain_hash_alg
        self._plain_sha = plain_hash(plain_hash_alg)
        # The plaintext hash runs on a worker thread (hashlib and blake3 release the GIL),
        # overlapping with compression: at most one chunk in flight, so memory stays bounded.
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bvh-plainhash")
        self._hashing = None
        self._plain_size = 0
        self._seg = segment_size
        salt = os.urandom(SALT_LEN)
        self._aead, self._prefix = _derive(data_key, salt)
        doc = {
            "v": format_version,
            "bind": bind,
            "aead": "AES-256-GCM-STREAM",
            "compression": "zstd",
            "segment_size": segment_size,
            "salt": base64.b64encode(salt).decode(),
        }
        if format_version == 2:
            doc["envelopes"] = envelopes_json(envelopes or [])
        else:
            doc["envelopes"] = "external"
            doc["dk"] = data_key_id(data_key)
        header = json.dumps(
            doc,
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        prologue = MAGIC + struct.pack(">I", len(header)) + header
        self._aad = hashlib.sha256(prologue).digest()
        self._out.write(prologue)
        self._level, self._threads = compression_level, compression_threads
        self._zc = zstandard.ZstdCompressor(level=compression_level, threads=compression_threads).compressobj()
        self._whole = False  # write_all() compressed everything: nothing left in the compressor
        self._buf = bytearray()
        self._index = 0
        self._closed = False
        self.stats: StreamStats | None = None

    def write(self, data: bytes) -> int:
        if self._closed or self._whole:
            raise ValueError("write to a closed EncryptingWriter")
        if self._hashing is not None:
            self._hashing.result()
        self._hashing = self._hasher.submit(self._plain_sha.update, bytes(data))
        self._plain_size += len(data)
        self._buf += self._zc.compress(data)
        self._drain(keep_last=True)
        return len(data)

    def write_all(self, data: bytes) -> int:
        """The whole plaintext at once (the only write; a WAL segment read in one piece): one zstd
        call instead of the stream — the same single frame without content size, for about a
        quarter less CPU. The caller bounds the size (it is all in memory)."""
        if self._closed or self._plain_size:
            raise ValueError("write_all must be the only write to an EncryptingWriter")
        if not data:
            return 0  # close() writes the empty input's frame, as the stream does
        self._hashing = self._hasher.submit(self._plain_sha.update, data)
        self._plain_size = len(data)
        self._buf += zstandard.ZstdCompressor(level=self._level, threads=self._threads,
                                              write_content_size=False).compress(data)
        self._whole = True
        self._drain(keep_last=True)
        return len(data)

    def _emit(self, chunk: bytes | memoryview, last: bool) -> None:
        self._out.write(self._aead.encrypt(_nonce(self._prefix, self._index, last), chunk, self._aad))
        self._index += 1

    def _drain(self, keep_last: bool) -> None:
        # Hold back at least one byte so the last segment is only decided at close().
        seg = self._seg
        done = 0
        with memoryview(self._buf) as view:  # segments encrypted where they lie, not copied out
            while len(view) - done > seg:
                self._emit(view[done:done + seg], last=False)
                done += seg
        del self._buf[:done]

    def close(self) -> StreamStats:
        if self._closed:
            assert self.stats is not None
            return self.stats
        if self._hashing is not None:
            self._hashing.result()
            self._hashing = None
        self._hasher.shutdown()
        if not self._whole:
            self._buf += self._zc.flush()
        self._drain(keep_last=True)
        self._emit(bytes(self._buf), last=True)
        self._buf.clear()
        self._closed = True
        digest = self._plain_sha.hexdigest()
        blake = self._plain_alg == "blake3"
        self.stats = StreamStats(
            plaintext_sha256="" if blake else digest,
            plaintext_size=self._plain_size,
            stored_sha256=self._out.sha.hexdigest(),
            stored_size=self._out.size,
            plaintext_blake3=digest if blake else "",
        )
        return self.stats


def _read_exact(source: BinaryIO, n: int) -> bytes:
    parts = []
    remaining = n
    while remaining:
        chunk = source.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


@dataclass(frozen=True)
class Header:
    segment_size: int
    salt: bytes
    envelopes: list[Envelope]  # format 2: from the header; format 3: [] (they live outside)
    aad: bytes
    bind: str
    version: int = 2
    dk: str = ""  # format 3: the data key's id (a commitment to it)


def read_header(source: BinaryIO, *, expect_bind: str) -> Header:
    """Parse and check an object's header; ``expect_bind`` is the repository key the caller
    opened: a header bound to another key (a moved, copied or swapped object) is refused."""
    magic = _read_exact(source, len(MAGIC))
    if magic != MAGIC:
        raise CryptoError("not a bvh-ops encrypted object (bad magic)")
    raw_len = _read_exact(source, 4)
    if len(raw_len) != 4:
        raise CryptoError("truncated header")
    (hlen,) = struct.unpack(">I", raw_len)
    if hlen > MAX_HEADER:
        raise CryptoError("header too large")
    header = _read_exact(source, hlen)
    if len(header) != hlen:
        raise CryptoError("truncated header")
    try:
        doc = json.loads(header)
        if doc["v"] == 1:
            raise CryptoError("object written in format 1 (not bound to its key): re-take this backup "
                              "with this version of bvh-ops")
        if doc["v"] not in READ_VERSIONS or doc["aead"] != "AES-256-GCM-STREAM" or doc["compression"] != "zstd":
            raise CryptoError(f"unsupported object format {doc.get('v')}/{doc.get('aead')}")
        version = int(doc["v"])
        if version == 2:
            envs = [Envelope(e["kid"], e["kem"], base64.b64decode(e["sealed"])) for e in doc["envelopes"]]
            dk = ""
        else:
            if doc["envelopes"] != "external":
                raise CryptoError("format-3 header must say envelopes 'external'")
            envs, dk = [], str(doc["dk"])
        seg = int(doc["segment_size"])
        salt = base64.b64decode(doc["salt"])
        bind = str(doc["bind"])
    except CryptoError:
        raise
    except Exception:
        raise CryptoError("malformed object header") from None
    if bind != expect_bind:
        raise CryptoError(f"object at {expect_bind} was written as {bind} (moved, copied or swapped): refusing it")
    return Header(seg, salt, envs, hashlib.sha256(magic + raw_len + header).digest(), bind, version, dk)


# Where a format-3 object's envelopes come from: a list (the caller read them from the manifest or
# index entry) or a function of the header (a file-set chunk: looked up by its ``dk``).
EnvelopeSource = list[Envelope] | Callable[[Header], list[Envelope]] | None


def header_envelopes(header: Header, external: EnvelopeSource) -> list[Envelope]:
    """The envelopes that seal this object's data key: format 2 from its header (``external``
    ignored), format 3 from ``external``."""
    if header.version == 2:
        return header.envelopes
    if external is None:
        raise CryptoError(f"object {header.bind} keeps its data-key envelopes outside (format 3) and none were "
                          "found for it (its manifest or index entry lacks them)")
    return external(header) if callable(external) else list(external)


def open_data_key(header: Header, identities: list[Identity], envelopes: EnvelopeSource = None) -> bytes:
    envs = header_envelopes(header, envelopes)
    by_kid = {i.key_id: i for i in identities}
    for env in envs:
        ident = by_kid.get(env.key_id)
        if ident is not None:
            key = ident.open(env.sealed)
            if header.version >= 3 and data_key_id(key) != header.dk:
                raise CryptoError(f"object {header.bind}: the envelope for key {env.key_id} opens another data key "
                                  "(envelopes swapped or forged)")
            return key
    kids = ", ".join(e.key_id for e in envs) or "none"
    raise CryptoError(
        f"no identity matches this backup's recipients (sealed to key ids {kids}): set BVH_OPS_IDENTITY to the right key"
    )


def _segments(source: BinaryIO, header: Header, data_key: bytes) -> Iterator[bytes]:
    aead, prefix = _derive(data_key, header.salt)
    width = header.segment_size + TAG_LEN
    cur = _read_exact(source, width)
    if len(cur) < TAG_LEN:
        raise CryptoError("truncated object: no complete segment")
    index = 0
    while True:
        if len(cur) < width:
            nxt, last = b"", True
        else:
            nxt = _read_exact(source, width)
            last = not nxt
            if nxt and len(nxt) < TAG_LEN:
                raise CryptoError(f"truncated object after segment {index}")
        try:
            yield aead.decrypt(_nonce(prefix, index, last), cur, header.aad)
        except CryptoError:
            raise
        except Exception:
            raise CryptoError(
                f"segment {index} failed authentication (tampered, reordered or truncated object)"
            ) from None
        if last:
            return
        cur, index = nxt, index + 1


class _IterRaw(io.RawIOBase):
    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class DecryptingReader(io.RawIOBase):
    """Read plaintext back from a stored object; raises CryptoError on any tampering."""

    def __init__(self, source: BinaryIO, identities: list[Identity], *, bind: str,
                 envelopes: EnvelopeSource = None, data_key: bytes | None = None) -> None:
        """``envelopes``: a format-3 object's envelopes (ignored for format 2). ``data_key``: open
        with this key instead (a rotation verifying what it just wrote; checked against ``dk``)."""
        header = read_header(source, expect_bind=bind)
        self.header = header
        if data_key is not None:
            if header.version >= 3 and data_key_id(data_key) != header.dk:
                raise CryptoError(f"object {bind} was not written with this data key")
            key = data_key
        else:
            key = open_data_key(header, identities, envelopes)
        compressed = io.BufferedReader(_IterRaw(_segments(source, header, key)), buffer_size=1 << 20)
        self._z = zstandard.ZstdDecompressor().stream_reader(compressed, read_across_frames=True)

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._z.read(len(b))
        except CryptoError:
            raise
        except zstandard.ZstdError as exc:
            raise CryptoError(f"decompression failed: {exc}") from None
        n = len(data)
        b[:n] = data
        return n


class HashingReader:
    """Pass-through reader that hashes and counts what its consumer reads. ``threaded`` hashes
    on a worker thread (one chunk in flight) so hashing overlaps the consumer's work."""

    def __init__(self, inner: BinaryIO, *, threaded: bool = False, alg: str = "sha256") -> None:
        self._inner = inner
        self._sha = plain_hash(alg)
        self.size = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bvh-sha256") if threaded else None
        self._pending = None

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        if self._pool is not None:
            if self._pending is not None:
                self._pending.result()
            self._pending = self._pool.submit(self._sha.update, data)
        else:
            self._sha.update(data)
        self.size += len(data)
        return data

    @property
    def sha(self):
        """The hash of everything read so far (waits for a pending update)."""
        if self._pending is not None:
            self._pending.result()
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        return self._sha

    def drain(self, chunk: int = 1 << 20) -> None:
        """Read (and hash) whatever the consumer left unread."""
        while self.read(chunk):
            pass


def copy_stream(src: BinaryIO, dst: Sink, chunk: int = 1 << 20) -> int:
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        dst.write(data)
        total += len(data)


def _pipe_fd(source) -> int | None:
    """The descriptor of ``source`` when it is a pipe (read with os.readv), else None."""
    import stat

    try:
        fd = source.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def widen_pipe(fd: int, size: int = 1 << 20) -> int:
    """Ask for a ``size`` pipe buffer (Linux F_SETPIPE_SZ; the default is 64 KiB); returns the
    size the pipe has (the default where the system refuses: limits, other kernels)."""
    import fcntl

    try:
        return fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except OSError:
        try:
            return fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032))
        except OSError:
            return 0


class ReadAhead:
    """Iterate over a pipe's or a socket's chunks read by a thread, up to ``depth`` chunks ahead:
    the tool writing them (pg_basebackup, pg_dump) never waits on a full pipe while we compress
    and encrypt. Memory: ``depth`` × ``chunk`` bytes.

    A UNIX stream socket (``bvh_ops.pg.tools.spawn_to_socket``) is read with MSG_WAITALL: one
    call gathers a whole chunk in the kernel, copying out each of the writer's writes as it
    comes, with no wake-up of this thread (nor the GIL) in between.

    A pipe is widened to 1 MiB and read in large pieces: pg_dump writes 4 KiB at a time, and a
    reader woken for each write made ~90,000 reads per 500 MB (0.45 s of CPU, and more for
    pg_dump); when a read finds little, the thread sleeps while the wide pipe fills (2 ms is
    under half of what fills 1 MiB at 235 MB/s, so the writer does not wait): ~2,000 reads, half
    the CPU. Where the pipe cannot be widened it is read as it comes, without the pause."""

    PAUSE_SECONDS = 0.002

    def __init__(self, source: BinaryIO, *, chunk: int = 1 << 20, depth: int = 8) -> None:
        import queue
        import threading

        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._source = source
        self._chunk = chunk
        self._sock = source if isinstance(source, socket.socket) else None
        self._fd = None if self._sock is not None else _pipe_fd(source)
        self._pause = self._fd is not None and widen_pipe(self._fd) >= 1 << 20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bvh-readahead", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._sock is not None:
                    data = self._read_socket()
                elif self._fd is not None:
                    data = self._read_pipe()
                else:
                    data = self._source.read(self._chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(exc)

    def _read_pipe(self) -> bytes:
        """Up to ``chunk`` bytes (fewer only at the end of the stream), read straight into one
        buffer."""
        import time

        buf = bytearray(self._chunk)
        got, little = 0, self._chunk >> 2
        with memoryview(buf) as view:
            while got < self._chunk and not self._stop.is_set():
                n = os.readv(self._fd, [view[got:]])
                if n == 0:
                    break
                got += n
                if self._pause and n < little and got < self._chunk:
                    time.sleep(self.PAUSE_SECONDS)
            return bytes(view[:got]) if got < self._chunk else bytes(buf)

    def _read_socket(self) -> bytes:
        """Up to ``chunk`` bytes (fewer only at the end of the stream), gathered by the kernel."""
        buf = bytearray(self._chunk)
        got = 0
        with memoryview(buf) as view:
            while got < self._chunk and not self._stop.is_set():
                n = self._sock.recv_into(view[got:], self._chunk - got, socket.MSG_WAITALL)
                if n == 0:
                    break
                got += n  # fewer than asked: the end, or a signal interrupted the wait
            return bytes(view[:got]) if got < self._chunk else bytes(buf)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._q.get()
            if isinstance(item, BaseException):
                raise item
            if not item:
                return
            yield item

    def close(self) -> None:
        """Stop reading (after an error); unblocks the reader thread."""
        import queue

        self._stop.set()
        try:
            while True:
                self._q.get_nowait()
        except queue.Empty:
            pass
