"""Repository layout, manifest records and path rules of file-set snapshots (pure: no I/O).

    files/content/<aa>/<address>              one encrypted chunk of >= SMALL_BLOB bytes (zstd + AES-GCM,
                                              bound to its key)
    files/packs/<pp>/<pack-id>                many smaller blobs: one encrypted stream of their
                                              plaintexts back to back (see packs.py)
    files/packs/<pp>/<pack-id>.idx            its index (address, offset, length per blob), written
                                              after the pack: the pack's commit point
    files/keys/content-<kid>.enc              the content key, sealed to the recipients
    files/snapshots/<id>/inprogress.json      written first; removed at commit
    files/snapshots/<id>/entries.jsonl.enc    the entries, encrypted JSON lines (names may be secret)
    files/snapshots/<id>/refs.txt             the chunk addresses referenced (keyed: leak nothing)
    files/snapshots/<id>/snapshot.json        signed index, written LAST (+ .copy): the commit point

Paths are kept as bytes on disk and stored as ``os.fsdecode`` text (surrogateescape): JSON
escapes the lone surrogates and newlines, so non-UTF-8 and newline names round-trip exactly.
Stored paths are relative (the absolute source path without its leading ``/``); command outputs
live under ``_commands/<name>``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from bvh_ops.errors import IntegrityError
from bvh_ops.keys import HostKey, host_key_id, verify_signature

ROOT = "files/"
CONTENT = ROOT + "content/"
SNAPSHOTS = ROOT + "snapshots/"
KEYS = ROOT + "keys/"
GC_LOCK = ROOT + "gc.lock"
INDEX = "snapshot.json"
INDEX_COPY = "snapshot.json.copy"
ENTRIES = "entries.jsonl.enc"
REFS = "refs.txt"
MARKER = "inprogress.json"
COMMANDS_DIR = "_commands"
# v2 (packs): chunk references may name a pack and offset; refs.txt may hold ``pack:<id>`` lines.
# Readers accept both; v1 snapshots (every chunk its own object) read unchanged.
INDEX_FORMAT = "bvh-ops-files-snapshot-v2"
INDEX_FORMATS = ("bvh-ops-files-snapshot-v1", INDEX_FORMAT)
CHUNK_SIZE = 4 << 20  # fixed-size chunks: memory per file is one chunk
PACKS = ROOT + "packs/"
PACK_INDEX_SUFFIX = ".idx"
PACK_REF = "pack:"      # refs.txt line naming a pack the snapshot references
SMALL_BLOB = 1 << 20    # chunks below this go into packs; bigger ones are objects of their own
PACK_TARGET = 16 << 20  # plaintext bytes after which a pack is closed


def content_key(address: str) -> str:
    return f"{CONTENT}{address[:2]}/{address}"


def pack_key(pack_id: str) -> str:
    return f"{PACKS}{pack_id[:2]}/{pack_id}"


def pack_index_key(pack_id: str) -> str:
    return pack_key(pack_id) + PACK_INDEX_SUFFIX


def object_ref(key: str) -> str:
    """The name refs.txt uses for a content or pack object key (what gc matches against)."""
    name = key.rsplit("/", 1)[-1]
    if key.startswith(PACKS):
        return PACK_REF + name.removesuffix(PACK_INDEX_SUFFIX)
    return name


def snapshot_prefix(snapshot_id: str) -> str:
    return f"{SNAPSHOTS}{snapshot_id}/"


def stored_path(abs_path: bytes) -> str:
    """/etc/nginx/nginx.conf (bytes) -> 'etc/nginx/nginx.conf' (surrogateescape text)."""
    return os.fsdecode(abs_path).lstrip("/")


def path_bytes(path: str) -> bytes:
    return os.fsencode(path)


@dataclass(frozen=True)
class Chunk:
    address: str             # HMAC-SHA256 of the plaintext chunk under the content key (hex)
    size: int                # plaintext bytes
    stored_size: int         # bytes of the encrypted object (0 for a blob in a pack)
    pack: str | None = None  # the pack holding it; None: its own object under files/content/
    offset: int = 0          # plaintext offset of the blob in its pack

    def to_json(self) -> list[Any]:
        if self.pack is None:
            return [self.address, self.size, self.stored_size]
        return [self.address, self.size, self.stored_size, self.pack, self.offset]

    @classmethod
    def from_json(cls, doc: list[Any]) -> Chunk:
        if len(doc) == 3:   # v1, or a chunk of its own
            return cls(str(doc[0]), int(doc[1]), int(doc[2]))
        a, s, st, pack, off = doc
        return cls(str(a), int(s), int(st), str(pack), int(off))

    def ref(self) -> str:
        """Its line in refs.txt: the object that must stay for this chunk to be readable."""
        return self.address if self.pack is None else PACK_REF + self.pack


@dataclass(frozen=True)
class Entry:
    """One manifest line."""

    path: str                  # relative, surrogateescape text (see module doc)
    type: str                  # file | dir | symlink
    mode: int                  # permission bits (st_mode & 0o7777)
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0              # plaintext bytes (files)
    chunks: tuple[Chunk, ...] = field(default_factory=tuple)
    target: str | None = None  # symlink target, surrogateescape text
    changed_while_read: bool = False

    def to_json(self) -> dict[str, Any]:
        # field by field (dataclasses.asdict deep-copies: a third of an unchanged snapshot's time)
        return {"path": self.path, "type": self.type, "mode": self.mode, "uid": self.uid, "gid": self.gid,
                "mtime_ns": self.mtime_ns, "size": self.size, "chunks": [c.to_json() for c in self.chunks],
                "target": self.target, "changed_while_read": self.changed_while_read}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Entry:
        return cls(path=doc["path"], type=doc["type"], mode=int(doc["mode"]), uid=int(doc["uid"]),
                   gid=int(doc["gid"]), mtime_ns=int(doc["mtime_ns"]), size=int(doc.get("size", 0)),
                   chunks=tuple(Chunk.from_json(c) for c in doc.get("chunks", [])),
                   target=doc.get("target"), changed_while_read=bool(doc.get("changed_while_read", False)))


@dataclass(frozen=True)
class SnapshotIndex:
    """The signed, unencrypted part of a snapshot: what list/verify/gc need without keys."""

    snapshot_id: str
    set: str
    klass: str                 # application | system | secrets
    host: str
    started_at: str
    finished_at: str
    files: int                 # entries of every type
    bytes_in: int              # plaintext bytes read
    bytes_stored: int          # new bytes this snapshot added to the repository
    partial: bool
    problems: int
    content_key_id: str
    key_ids: tuple[str, ...]   # recipients the entries and new chunks are sealed to
    entries_sha256: str        # stored sha256 and size of entries.jsonl.enc
    entries_size: int
    refs_sha256: str           # sha256 and count of refs.txt
    refs_count: int

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["key_ids"] = list(self.key_ids)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> SnapshotIndex:
        doc = dict(doc)
        doc["key_ids"] = tuple(doc["key_ids"])
        return cls(**doc)


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_index(index: SnapshotIndex, key: HostKey) -> bytes:
    body = index.to_dict()
    env = {"format": INDEX_FORMAT, "snapshot": body,
           "signature": {"alg": "ed25519", "key_id": key.key_id, "public_key": key.public_b64,
                         "value": key.sign(_canonical(body))}}
    return json.dumps(env, sort_keys=True, indent=1).encode() + b"\n"


def parse_index(raw: bytes, trusted: dict[str, str], *, expect_id: str) -> tuple[SnapshotIndex, bool, str]:
    """(index, signature_ok, detail); IntegrityError when unreadable or naming another snapshot."""
    try:
        env = json.loads(raw)
        if env.get("format") not in INDEX_FORMATS:
            raise ValueError(f"unknown format {env.get('format')!r}")
        body = env["snapshot"]
        index = SnapshotIndex.from_dict(body)
        sig = env["signature"]
    except Exception as exc:
        raise IntegrityError(f"snapshot index is unreadable: {exc}") from None
    if index.snapshot_id != expect_id:
        raise IntegrityError(f"index under {expect_id} is that of snapshot {index.snapshot_id}: refusing it")
    kid = sig.get("key_id", "")
    pub = trusted.get(kid)
    if pub is None:
        return index, False, f"signed by untrusted host key {kid or '?'}"
    if host_key_id(pub) != kid or not verify_signature(pub, sig.get("value", ""), _canonical(body)):
        return index, False, "signature does not match the index (edited?)"
    return index, True, f"signed by host key {kid}"


def check_entry_path(path: str) -> tuple[bytes, ...]:
    """The components of a stored path, or IntegrityError for one that could leave the target
    directory: absolute, empty, '.', '..', or holding a NUL byte."""
    raw = path_bytes(path)
    if not raw or raw.startswith(b"/") or b"\x00" in raw:
        raise IntegrityError(f"manifest entry {path!r}: absolute or empty path: refusing to restore it")
    parts = tuple(raw.split(b"/"))
    if any(p in (b"", b".", b"..") for p in parts):
        raise IntegrityError(f"manifest entry {path!r}: '..', '.' or an empty component: refusing to restore it")
    return parts


def check_manifest_paths(entries: list[Entry]) -> None:
    """Refuse, before anything is written, a manifest that would write outside the target:
    a bad path, or an entry below a symlink entry (writing through the link)."""
    links = set()
    for e in entries:
        parts = check_entry_path(e.path)
        for i in range(1, len(parts)):
            if parts[:i] in links:
                raise IntegrityError(f"manifest entry {e.path!r} lies below the symlink "
                                     f"{os.fsdecode(b'/'.join(parts[:i]))!r}: refusing to write through a link")
        if e.type == "symlink":
            links.add(parts)
        elif e.type not in ("file", "dir"):
            raise IntegrityError(f"manifest entry {e.path!r}: unknown type {e.type!r}")
