"""Verify snapshots and collect unreferenced content.

Verify returns results, never raises for a bad object: every snapshot's index signature, its
entries object (stored sha256 and size) and refs, every referenced chunk present with its
recorded stored size, every referenced pack present with its index and the size the index
records; deep also decrypts each chunk and each pack (once), checks every blob's keyed address
and the pack's stored sha256, and that every packed blob the entries name is where they say.

Garbage collection is plan, then delete: take the gc lock (snapshots refuse to start while it
is held), refuse while any snapshot is in progress (it may be reusing old chunks it found by
``stat`` or in a pack index), read the refs of every committed snapshot, and delete only chunks
and packs no index references and that are older than the gc's start. Packs are not repacked:
a pack stays, whole, while any snapshot references any blob in it, and goes (index first, then
the pack) once none does. Small files change rarely and a pack holds about 16 MiB, so the space
a partly-dead pack keeps is small; repacking (restic's ``prune``) is not built. An unreadable or
damaged index stops the gc: content it might reference is never deleted.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bvh_ops.errors import BvhOpsError, ConcurrencyError, IntegrityError, NotFound
from bvh_ops.files.catalog import delete_snapshot, iter_entries, list_snapshots, live_markers, read_refs
from bvh_ops.files.content import address, open_sealed_key
from bvh_ops.files.layout import (
    CONTENT,
    ENTRIES,
    GC_LOCK,
    PACK_INDEX_SUFFIX,
    PACK_REF,
    PACKS,
    content_key,
    object_ref,
    pack_key,
    snapshot_prefix,
)
from bvh_ops.files.packs import iter_pack, read_chunk, read_pack_info
from bvh_ops.keys import Identity
from bvh_ops.storage.base import ObjectInfo, ObjectStore


class Status(enum.StrEnum):
    OK = "OK"
    MISSING = "MISSING"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    UNREADABLE = "UNREADABLE"
    BAD_SIGNATURE = "BAD_SIGNATURE"


@dataclass(frozen=True)
class Check:
    snapshot_id: str
    object: str
    status: Status
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"snapshot_id": self.snapshot_id, "object": self.object, "status": str(self.status),
                "detail": self.detail}


def verify_snapshots(store: ObjectStore, trusted: dict[str, str], *, identities: list[Identity] | None = None,
                     set_name: str | None = None, snapshot_id: str | None = None) -> list[Check]:
    """Checks of every snapshot (of ``set_name``; or the one ``snapshot_id``)."""
    out: list[Check] = []
    checked: set[str] = set()
    keys: dict[str, bytes] = {}
    for s in list_snapshots(store, trusted, set_name):
        if snapshot_id is not None and s.snapshot_id != snapshot_id:
            continue
        if s.index is None:
            if s.detail.startswith("damaged"):
                out.append(Check(s.snapshot_id, "snapshot.json", Status.UNREADABLE, s.detail))
            continue
        idx = s.index
        out.append(Check(idx.snapshot_id, "snapshot.json", Status.OK if s.signature_ok else Status.BAD_SIGNATURE,
                         s.detail))
        ent = snapshot_prefix(idx.snapshot_id) + ENTRIES
        out.append(_stored(store, idx.snapshot_id, ent, idx.entries_size, idx.entries_sha256))
        try:
            refs = read_refs(store, idx)
            out.append(Check(idx.snapshot_id, "refs.txt", Status.OK))
        except (NotFound, IntegrityError) as exc:
            out.append(Check(idx.snapshot_id, "refs.txt", Status.UNREADABLE, str(exc)))
            refs = set()
        sizes: dict[str, int] = {}
        packed: dict[str, set[tuple[str, int, int]]] = {}
        if identities:
            try:
                keys.setdefault(idx.content_key_id, open_sealed_key(store, idx.content_key_id, identities))
                for e in iter_entries(store, idx.snapshot_id, identities):
                    for c in e.chunks:
                        if c.pack is None:
                            sizes[c.address] = c.stored_size
                        else:
                            packed.setdefault(c.pack, set()).add((c.address, c.offset, c.size))
            except BvhOpsError as exc:
                out.append(Check(idx.snapshot_id, ENTRIES, Status.UNREADABLE, str(exc)))
        for ref in sorted(refs):
            if ref.startswith(PACK_REF):
                pack_id = ref.removeprefix(PACK_REF)
                out.extend(_pack(store, idx.snapshot_id, pack_id, identities, keys, packed.get(pack_id, set()),
                                 deep_done=ref in checked))
            elif ref not in checked:
                out.append(_chunk(store, idx.snapshot_id, ref, sizes.get(ref), identities,
                                  keys.get(idx.content_key_id)))
            checked.add(ref)
    return out


def _pack(store: ObjectStore, sid: str, pack_id: str, identities: list[Identity] | None, keys: dict[str, bytes],
          wanted: set[tuple[str, int, int]], *, deep_done: bool) -> list[Check]:
    """A referenced pack: its index readable, the pack there with the size the index records; deep
    (once per pack): every blob's keyed address and the pack's stored sha256; and each blob this
    snapshot's entries name is in the pack's index at that offset."""
    name = pack_key(pack_id)
    try:
        info = read_pack_info(store, pack_id)
    except (NotFound, IntegrityError) as exc:
        return [Check(sid, name + PACK_INDEX_SUFFIX, Status.UNREADABLE, str(exc))]
    out: list[Check] = []
    listed = set(info.blobs)
    for addr, off, n in sorted(wanted - listed):
        out.append(Check(sid, name, Status.MISSING, f"blob {addr[:12]}… at {off} (+{n}) is not in the pack's index"))
    if deep_done:
        return out
    stat_ = store.stat(name)
    if stat_ is None:
        return [*out, Check(sid, name, Status.MISSING)]
    if stat_.size != info.stored_size:
        return [*out, Check(sid, name, Status.SIZE_MISMATCH, f"{stat_.size} bytes, pack index says {info.stored_size}")]
    if identities:
        try:
            ckey = keys.get(info.content_key_id) or open_sealed_key(store, info.content_key_id, identities)
            keys[info.content_key_id] = ckey
            for addr, data in iter_pack(store, info, identities):
                if addr is None:
                    if data != info.stored_sha256:
                        return [*out, Check(sid, name, Status.CHECKSUM_MISMATCH, "stored sha256 differs from the index")]
                elif address(ckey, data) != addr:
                    return [*out, Check(sid, name, Status.CHECKSUM_MISMATCH,
                                        f"blob {addr[:12]}…: keyed hash differs from the address")]
        except BvhOpsError as exc:
            return [*out, Check(sid, name, Status.UNREADABLE, str(exc))]
    return [*out, Check(sid, name, Status.OK)]


def _stored(store: ObjectStore, sid: str, key: str, size: int, sha: str) -> Check:
    h, n = hashlib.sha256(), 0
    try:
        with store.open_reader(key) as body:
            while data := body.read(1 << 20):
                h.update(data)
                n += len(data)
    except NotFound:
        return Check(sid, key, Status.MISSING)
    if n != size:
        return Check(sid, key, Status.SIZE_MISMATCH, f"{n} bytes, index says {size}")
    if h.hexdigest() != sha:
        return Check(sid, key, Status.CHECKSUM_MISMATCH)
    return Check(sid, key, Status.OK)


def _chunk(store: ObjectStore, sid: str, addr: str, size: int | None, identities: list[Identity] | None,
           ckey: bytes | None) -> Check:
    name = content_key(addr)
    info = store.stat(name)
    if info is None:
        return Check(sid, name, Status.MISSING)
    if size is not None and info.size != size:
        return Check(sid, name, Status.SIZE_MISMATCH, f"{info.size} bytes, manifest says {size}")
    if identities and ckey is not None:
        try:
            data = read_chunk(store, addr, identities)
        except BvhOpsError as exc:
            return Check(sid, name, Status.UNREADABLE, str(exc))
        if address(ckey, data) != addr:
            return Check(sid, name, Status.CHECKSUM_MISMATCH, "keyed hash differs from the address")
    return Check(sid, name, Status.OK)


# -- garbage collection -------------------------------------------------------------------


def plan_gc(content: list[ObjectInfo], referenced: set[str], started: datetime) -> list[str]:
    """Pure: the chunk and pack keys to delete — unreferenced (refs.txt names: a chunk's address,
    ``pack:<id>`` for a pack and its index) and written before the gc started. A pack's index is
    deleted before its pack: the pack stops existing for dedup before its bytes go."""
    doomed = [o.key for o in content
              if object_ref(o.key) not in referenced and o.modified < started and "/.tmp-" not in o.key]
    return sorted(doomed, key=lambda k: (not k.endswith(PACK_INDEX_SUFFIX), k))


def collect_garbage(store: ObjectStore, trusted: dict[str, str], now: datetime, *,
                    dry_run: bool = False) -> dict[str, Any]:
    store.put_bytes(GC_LOCK, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                          "started_at": now.isoformat()}).encode())
    try:
        if markers := live_markers(store, now):
            raise ConcurrencyError(f"file-set snapshot {markers[0][0]} is in progress: gc deletes nothing while a "
                                   "snapshot runs (it may be reusing old content); try again later")
        referenced: set[str] = set()
        abandoned: list[str] = []
        snapshots = 0
        for s in list_snapshots(store, trusted):
            if s.index is None:
                if s.detail.startswith("damaged"):
                    raise IntegrityError(f"file-set snapshot {s.snapshot_id} is {s.detail}: gc stops rather than "
                                         "delete content it may reference")
                abandoned.append(s.snapshot_id)   # never committed (no live marker): garbage
                continue
            referenced |= read_refs(store, s.index)
            snapshots += 1
        content = list(store.list(CONTENT)) + list(store.list(PACKS))
        doomed = plan_gc(content, referenced, now)
        freed = 0
        sizes = {o.key: o.size for o in content}
        if not dry_run:
            for sid in abandoned:
                delete_snapshot(store, sid)
            for key in doomed:
                try:
                    store.delete(key)
                except NotFound:
                    continue
                freed += sizes[key]
        return {"snapshots": snapshots, "content_objects": len(content), "referenced": len(referenced),
                "deleted": len(doomed), "bytes_freed": freed if not dry_run else sum(sizes[k] for k in doomed),
                "abandoned_snapshots": abandoned, "dry_run": dry_run}
    finally:
        try:
            store.delete(GC_LOCK)
        except NotFound:
            pass
