"""Packs: many small blobs in one repository object (restic's and Borg's packs).

A pack is one encrypted object (the same zstd + AES-256-GCM STREAM pipeline, bound to its key)
whose plaintext is its blobs back to back; each blob keeps its keyed address. Its index
``<pack>.idx`` (plain JSON: addresses are keyed hashes and leak nothing; offsets and lengths say
what an object's size already says) is written after the pack is committed: a pack without an
index does not exist for dedup and is garbage for gc. One pack costs one write and one fsync for
up to PACK_TARGET bytes of small files, where one object per file cost an fsync per file.

Reading a blob decrypts its pack from the start up to the blob; ``BlobReader`` keeps the open
pack between calls, so blobs read in pack order (a restore in manifest order) read each pack once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from bvh_ops.errors import IntegrityError, NotFound
from bvh_ops.files.layout import (
    PACK_INDEX_SUFFIX,
    PACK_TARGET,
    PACKS,
    Chunk,
    content_key,
    pack_index_key,
    pack_key,
)
from bvh_ops.keys import Identity
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import DecryptingReader, EncryptingWriter, Envelope

PACK_INDEX_FORMAT = "bvh-ops-files-pack-v1"


@dataclass(frozen=True)
class PackInfo:
    pack_id: str
    content_key_id: str
    stored_size: int
    stored_sha256: str
    blobs: tuple[tuple[str, int, int], ...]   # (address, plaintext offset, length), in pack order

    def to_bytes(self) -> bytes:
        return json.dumps({"format": PACK_INDEX_FORMAT, "pack": self.pack_id, "content_key_id": self.content_key_id,
                           "stored_size": self.stored_size, "stored_sha256": self.stored_sha256,
                           "blobs": [list(b) for b in self.blobs]}, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes, *, expect_id: str) -> PackInfo:
        try:
            doc = json.loads(raw)
            if doc.get("format") != PACK_INDEX_FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            info = cls(str(doc["pack"]), str(doc["content_key_id"]), int(doc["stored_size"]),
                       str(doc["stored_sha256"]), tuple((str(a), int(o), int(n)) for a, o, n in doc["blobs"]))
        except Exception as exc:
            raise IntegrityError(f"pack index {expect_id}{PACK_INDEX_SUFFIX} is unreadable: {exc}") from None
        if info.pack_id != expect_id:
            raise IntegrityError(f"pack index under {expect_id} is that of pack {info.pack_id}: refusing it")
        return info


@dataclass
class PackIndex:
    """Every committed pack's blobs: address -> (pack id, offset, length)."""

    blobs: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    packs: set[str] = field(default_factory=set)
    damaged: list[str] = field(default_factory=list)   # unreadable pack indexes, skipped

    def add(self, info: PackInfo) -> None:
        self.packs.add(info.pack_id)
        for addr, off, n in info.blobs:
            self.blobs.setdefault(addr, (info.pack_id, off, n))


def committed_packs(store: ObjectStore) -> dict[str, Any]:
    """pack id -> ObjectInfo of its index, for packs whose index exists."""
    return {o.key.rsplit("/", 1)[1].removesuffix(PACK_INDEX_SUFFIX): o
            for o in store.list(PACKS) if o.key.endswith(PACK_INDEX_SUFFIX)}


def read_pack_info(store: ObjectStore, pack_id: str) -> PackInfo:
    try:
        raw = store.get_bytes(pack_index_key(pack_id))
    except NotFound:
        raise IntegrityError(f"pack {pack_id} has no index ({pack_index_key(pack_id)})") from None
    return PackInfo.parse(raw, expect_id=pack_id)


def load_pack_index(store: ObjectStore, cache_dir: Path | None = None) -> PackIndex:
    """The index of every committed pack. Pack indexes never change, so each is fetched once into
    ``cache_dir`` (one directory per repository) and read from there afterwards; cached indexes of
    packs that are gone are removed. A damaged index is skipped and listed in ``damaged``: its
    blobs are stored again rather than the snapshot failing."""
    index = PackIndex()
    listed = committed_packs(store)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for cached in cache_dir.glob("*" + PACK_INDEX_SUFFIX):
            if cached.name.removesuffix(PACK_INDEX_SUFFIX) not in listed:
                cached.unlink(missing_ok=True)
    for pack_id in sorted(listed):
        cached = cache_dir / (pack_id + PACK_INDEX_SUFFIX) if cache_dir is not None else None
        info = None
        if cached is not None and cached.is_file():
            try:
                info = PackInfo.parse(cached.read_bytes(), expect_id=pack_id)
            except IntegrityError:
                info = None   # a damaged local copy: fetch it again
        if info is None:
            try:
                raw = store.get_bytes(pack_index_key(pack_id))
            except NotFound:
                continue   # deleted by a gc since the listing
            try:
                info = PackInfo.parse(raw, expect_id=pack_id)
            except IntegrityError as exc:
                index.damaged.append(str(exc))   # not used for dedup; verify reports it
                continue
            if cached is not None:
                tmp = cached.with_name(f".tmp-{cached.name}.{os.getpid()}")
                tmp.write_bytes(raw)
                os.replace(tmp, cached)
        index.add(info)
    return index


class Batching:
    """Hands ``inner`` (an EncryptingWriter) writes of about ``size`` bytes: one compress call and
    one hashing hand-off per batch instead of per small blob or manifest line."""

    def __init__(self, inner: EncryptingWriter, size: int = 1 << 20) -> None:
        self._inner = inner
        self._size = size
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= self._size:
            self._inner.write(bytes(self._buf))
            self._buf.clear()
        return len(data)

    def close(self) -> Any:
        if self._buf:
            self._inner.write(bytes(self._buf))
            self._buf.clear()
        return self._inner.close()


class PackWriter:
    """Appends blobs to the open pack; ``flush()`` commits it and then its index."""

    def __init__(self, store: ObjectStore, *, data_key: bytes, envelopes: list[Envelope], content_key_id: str,
                 index: PackIndex, compression_level: int = 3, segment_size: int = 1 << 20,
                 target: int | None = None) -> None:
        self._store = store
        self._data_key, self._envelopes = data_key, envelopes
        self._kid = content_key_id
        self._index = index
        self._level, self._seg, self._target = compression_level, segment_size, target or PACK_TARGET
        self._id: str | None = None
        self._sink: Any = None
        self._enc: Batching | None = None
        self._blobs: list[tuple[str, int, int]] = []
        self._offset = 0
        self.stored_bytes = 0   # packs and pack indexes committed by this writer
        self.packs_written = 0

    def add(self, addr: str, data: bytes) -> Chunk:
        if self._enc is None:
            self._id = os.urandom(16).hex()
            key = pack_key(self._id)
            self._sink = self._store.open_writer(key)
            self._enc = Batching(EncryptingWriter(sink=self._sink, data_key=self._data_key, envelopes=self._envelopes,
                                                  compression_level=self._level, segment_size=self._seg, bind=key))
            self._blobs, self._offset = [], 0
        assert self._id is not None
        chunk = Chunk(addr, len(data), 0, self._id, self._offset)
        self._enc.write(data)
        self._blobs.append((addr, self._offset, len(data)))
        self._offset += len(data)
        if self._offset >= self._target:
            self.flush()
        return chunk

    def flush(self) -> None:
        """Commit the open pack, then its index (the commit point); nothing when none is open."""
        if self._enc is None:
            return
        enc, sink, pack_id = self._enc, self._sink, self._id
        assert pack_id is not None
        self._enc = self._sink = None
        try:
            stats = enc.close()
            sink.commit()
        except BaseException:
            sink.abort()
            raise
        info = PackInfo(pack_id, self._kid, stats.stored_size, stats.stored_sha256, tuple(self._blobs))
        raw = info.to_bytes()
        self._store.put_bytes(pack_index_key(pack_id), raw)
        self._index.add(info)
        self.stored_bytes += stats.stored_size + len(raw)
        self.packs_written += 1

    def abort(self) -> None:
        """Drop the open pack (committed ones stay: unreferenced, gc removes them)."""
        if self._sink is not None:
            self._sink.abort()
        self._enc = self._sink = None


class BlobReader:
    """Reads chunks: a chunk of its own from its object, a packed blob through the open pack
    (kept between calls and read forward; an earlier offset or another pack reopens)."""

    def __init__(self, store: ObjectStore, identities: list[Identity]) -> None:
        self._store = store
        self._ids = identities
        self._pack: str | None = None
        self._body: BinaryIO | None = None
        self._reader: DecryptingReader | None = None
        self._pos = 0
        self._env: Any = None   # the data-key records' envelopes, looked up once per reader

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
        self._body = self._reader = self._pack = None

    def read(self, chunk: Chunk) -> bytes:
        if chunk.pack is None:
            return read_chunk(self._store, chunk.address, self._ids)
        if self._pack != chunk.pack or chunk.offset < self._pos:
            self.close()
            key = pack_key(chunk.pack)
            self._body = self._store.open_reader(key)
            if self._env is None:
                self._env = _envelopes(self._store)
            self._reader = DecryptingReader(self._body, self._ids, bind=key, envelopes=self._env)
            self._pack, self._pos = chunk.pack, 0
        assert self._reader is not None
        skip = chunk.offset - self._pos
        while skip:
            got = self._reader.read(min(skip, 1 << 20))
            if not got:
                raise IntegrityError(f"pack {chunk.pack} ends before offset {chunk.offset}")
            skip -= len(got)
        parts, need = [], chunk.size
        while need:
            got = self._reader.read(need)
            if not got:
                raise IntegrityError(f"pack {chunk.pack} ends inside the blob at offset {chunk.offset}")
            parts.append(got)
            need -= len(got)
        self._pos = chunk.offset + chunk.size
        return b"".join(parts)


def read_chunk(store: ObjectStore, addr: str, identities: list[Identity]) -> bytes:
    """The plaintext of a chunk of its own (files/content/<aa>/<address>)."""
    key = content_key(addr)
    with store.open_reader(key) as body:
        reader = DecryptingReader(body, identities, bind=key, envelopes=_envelopes(store))
        parts = []
        while data := reader.read(1 << 20):
            parts.append(data)
    return b"".join(parts)


def iter_pack(store: ObjectStore, info: PackInfo, identities: list[Identity]):
    """(address, plaintext) of every blob of a pack, in order, with the stored bytes hashed on the
    way: the last item is (None, stored sha256) — deep verify's single pass over a pack."""
    key = pack_key(info.pack_id)
    with store.open_reader(key) as raw:
        hashed = _Hashing(raw)
        reader = DecryptingReader(hashed, identities, bind=key, envelopes=_envelopes(store))
        pos = 0
        for addr, off, n in info.blobs:
            if off != pos:
                raise IntegrityError(f"pack index {info.pack_id}: blob at {off} does not follow the previous one")
            data = reader.read(n) if n else b""
            while len(data) < n:
                more = reader.read(n - len(data))
                if not more:
                    raise IntegrityError(f"pack {info.pack_id} ends inside a blob")
                data += more
            pos += n
            yield addr, data
        while reader.read(1 << 20):
            pass
        while hashed.read(1 << 20):
            pass
        yield None, hashed.sha.hexdigest()


class _Hashing:
    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self.sha.update(data)
        return data


def _envelopes(store: ObjectStore):
    """Format 3: a pack's or chunk's envelopes are in the run's data-key record (files/keys/)."""
    from bvh_ops.files.content import store_envelopes  # content imports this module

    return store_envelopes(store)
