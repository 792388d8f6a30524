"""The content key and the chunk store.

Chunks are addressed by HMAC-SHA256 under a repository *content key* (32 random bytes): equal
content gets the same address across days and hosts, and an address says nothing about the
content to anyone without the key (a plain sha256 would confirm guesses of small secrets).

Where the key lives: ``state_dir/files-content.key`` (0600, created once, never through a link)
for the host that snapshots, and a copy sealed to the recipients at
``files/keys/content-<kid>.enc`` in the repository. A second host sharing the repository gets the
same key either by copying the file or, when it holds the identity, by opening the sealed copy
on first use (then it dedups against the first host's content). Deep verify opens the sealed
copy with the identity to recompute every address.

Format 3: every object a snapshot run writes (chunks, its entries, the sealed content key) is
encrypted with the run's data key, whose envelopes live once in ``files/keys/data-<dk>.json``
(``dk`` is the data-key id in each object's header), written before the first object: a key
rotation rewrites those small records, never a chunk.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bvh_ops.errors import ConfigError, IntegrityError, NotFound
from bvh_ops.files.layout import KEYS, SMALL_BLOB, Chunk, content_key
from bvh_ops.files.packs import PackIndex, PackWriter, load_pack_index
from bvh_ops.keys import Identity, Recipient
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import (
    DecryptingReader,
    EncryptingWriter,
    Envelope,
    Header,
    StreamStats,
    data_key_id,
    envelopes_from_json,
    envelopes_json,
)

KEY_FILE = "files-content.key"
KEY_BYTES = 32


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"bvh-ops-files-content-key-v1" + key).hexdigest()[:16]


def address(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sealed_key_name(kid: str) -> str:
    return f"{KEYS}content-{kid}.enc"


def data_key_record(dk: str) -> str:
    return f"{KEYS}data-{dk}.json"


def save_data_key_record(store: ObjectStore, data_key: bytes, envelopes: list[Envelope]) -> str:
    """Write the run's data-key record (its envelopes) before any object encrypted with it."""
    dk = data_key_id(data_key)
    doc = {"dk": dk, "key_ids": [e.key_id for e in envelopes], "envelopes": envelopes_json(envelopes)}
    store.put_bytes(data_key_record(dk), json.dumps(doc, sort_keys=True).encode())
    return dk


def store_envelopes(store: ObjectStore):
    """An envelope source for DecryptingReader: a format-3 object's envelopes looked up by the
    ``dk`` of its header (cached: one record serves every chunk of a run)."""
    cache: dict[str, list[Envelope]] = {}

    def lookup(header: Header) -> list[Envelope]:
        if header.dk not in cache:
            try:
                doc = json.loads(store.get_bytes(data_key_record(header.dk)))
            except NotFound:
                raise IntegrityError(f"{header.bind}: its data-key record {data_key_record(header.dk)} is "
                                     "missing") from None
            cache[header.dk] = envelopes_from_json(doc.get("envelopes"))
        return cache[header.dk]

    return lookup


def _read_local(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"content key {path} is a symbolic link: refusing to follow it") from None
        raise ConfigError(f"cannot read content key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        raw = fh.read()
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"content key {path} is malformed: restore it from your key backup")
    return raw


def _write_local(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)


def _existing_sealed(store: ObjectStore) -> list[str]:
    return sorted(o.key for o in store.list(KEYS) if o.key.rsplit("/", 1)[-1].startswith("content-"))


def open_sealed_key(store: ObjectStore, kid: str, identities: list[Identity]) -> bytes:
    name = sealed_key_name(kid)
    try:
        with store.open_reader(name) as body:
            key = DecryptingReader(body, identities, bind=name, envelopes=store_envelopes(store)).read()
    except NotFound:
        raise IntegrityError(f"content key {kid} is missing from the repository ({name})") from None
    if len(key) != KEY_BYTES or key_id(key) != kid:
        raise IntegrityError(f"sealed content key {name} does not match its id")
    return key


def load_content_key(state_dir: Path, store: ObjectStore, *, data_key: bytes, envelopes: list[Envelope],
                     identities: list[Identity] | None) -> bytes:
    """The content key: the local file; else the repository's sealed key (with an identity);
    else a new key, saved locally and sealed into the repository."""
    path = Path(state_dir) / KEY_FILE
    key = _read_local(path)
    if key is None:
        sealed = _existing_sealed(store)
        if sealed and identities:
            kid = sealed[0].rsplit("content-", 1)[1].removesuffix(".enc")
            key = open_sealed_key(store, kid, identities)
        else:
            key = os.urandom(KEY_BYTES)
        try:
            _write_local(path, key)
        except FileExistsError:
            key = _read_local(path)  # another process made it first
            assert key is not None
    name = sealed_key_name(key_id(key))
    if store.stat(name) is None:
        write_object(store, name, data_key, key, envelopes=envelopes)
    return key


def write_object(store: ObjectStore, name: str, data_key: bytes, data: bytes, *, envelopes: list[Envelope] | None = None,
                 level: int = 3, segment_size: int = 1 << 20) -> StreamStats:
    """One small encrypted object bound to ``name``, visible only once complete (a failed write
    leaves nothing). ``envelopes`` only matter to a format-2 writer (test fixtures)."""
    sink = store.open_writer(name)
    try:
        w = EncryptingWriter(sink=sink, data_key=data_key, envelopes=envelopes, compression_level=level,
                             segment_size=segment_size, bind=name)
        w.write(data)
        stats = w.close()
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return stats


@dataclass
class ChunkStore:
    """Stores each chunk once: an address already present (this run, a committed pack, or stat
    in the store) is reused; a new chunk below SMALL_BLOB goes into the open pack, a bigger one
    is written as its own object, encrypted and bound to its key. Hashing runs in the caller's
    thread."""

    store: ObjectStore
    key: bytes
    data_key: bytes
    envelopes: list[Envelope]
    compression_level: int = 3
    segment_size: int = 1 << 20
    packs: PackIndex | None = None
    pack_cache: Path | None = None   # where committed packs' indexes are cached (state_dir)

    def __post_init__(self) -> None:
        self._known: dict[str, Chunk] = {}
        if self.packs is None:
            self.packs = load_pack_index(self.store, self.pack_cache)
        self.writer = PackWriter(self.store, data_key=self.data_key, envelopes=self.envelopes,
                                 content_key_id=key_id(self.key), index=self.packs,
                                 compression_level=self.compression_level, segment_size=self.segment_size)

    def has(self, chunk: Chunk) -> bool:
        """Is ``chunk`` (a reference remembered from an earlier snapshot) still stored where it says?"""
        if chunk.address in self._known:
            return True
        if chunk.pack is not None:
            assert self.packs is not None
            loc = self.packs.blobs.get(chunk.address)
            if chunk.pack not in self.packs.packs or loc is None:
                return False
            ok = True
        else:
            ok = self.store.stat(content_key(chunk.address)) is not None
        if ok:
            self._known[chunk.address] = chunk
        return ok

    def put(self, data: bytes) -> tuple[Chunk, bool]:
        """(the chunk's reference, written now)."""
        addr = address(self.key, data)
        known = self._known.get(addr)
        if known is not None:
            return known, False
        if len(data) < SMALL_BLOB:
            assert self.packs is not None
            loc = self.packs.blobs.get(addr)
            if loc is not None:
                chunk = Chunk(addr, len(data), 0, loc[0], loc[1])
                new = False
            else:
                chunk, new = self.writer.add(addr, data), True
            self._known[addr] = chunk
            return chunk, new
        name = content_key(addr)
        info = self.store.stat(name)
        if info is not None:
            self._known[addr] = Chunk(addr, len(data), info.size)
            return self._known[addr], False
        stats = write_object(self.store, name, self.data_key, data, level=self.compression_level,
                             segment_size=self.segment_size)
        self._known[addr] = Chunk(addr, len(data), stats.stored_size)
        return self._known[addr], True


def recipients_key_ids(recipients: list[Recipient]) -> tuple[str, ...]:
    return tuple(r.key_id for r in recipients)
