"""The snapshot catalog: list, load (signature checked), read entries (decrypted), delete;
in-progress markers and the gc lock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from bvh_ops.errors import IntegrityError, NotFound, StorageError
from bvh_ops.files.content import store_envelopes
from bvh_ops.files.layout import (
    ENTRIES,
    GC_LOCK,
    INDEX,
    INDEX_COPY,
    MARKER,
    REFS,
    SNAPSHOTS,
    Entry,
    SnapshotIndex,
    parse_index,
    snapshot_prefix,
)
from bvh_ops.keys import Identity
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import DecryptingReader

# A gc lock or an in-progress marker older than this is abandoned (its writer died).
STALE_HOURS = 24.0


@dataclass(frozen=True)
class Listed:
    snapshot_id: str
    index: SnapshotIndex | None   # None: in progress or abandoned (no index yet)
    signature_ok: bool
    detail: str
    modified: datetime


def snapshot_ids(store: ObjectStore) -> dict[str, list]:
    groups: dict[str, list] = {}
    for info in store.list(SNAPSHOTS):
        parts = info.key[len(SNAPSHOTS):].split("/")
        if len(parts) == 2:
            groups.setdefault(parts[0], []).append(info)
    return groups


def load_index(store: ObjectStore, trusted: dict[str, str], sid: str) -> tuple[SnapshotIndex, bool, str]:
    prefix = snapshot_prefix(sid)
    errors, untrusted = [], None
    for name in (INDEX, INDEX_COPY):
        try:
            loaded = parse_index(store.get_bytes(prefix + name), trusted, expect_id=sid)
        except NotFound:
            errors.append(f"{name} missing")
            continue
        except IntegrityError as exc:
            errors.append(f"{name}: {exc}")
            continue
        if loaded[1]:
            return loaded
        untrusted = untrusted or loaded
    if untrusted is not None:
        return untrusted
    raise NotFound(f"file-set snapshot {sid} not found ({'; '.join(errors)}): see `bvh-ops files list`")


def list_snapshots(store: ObjectStore, trusted: dict[str, str], set_name: str | None = None) -> list[Listed]:
    out = []
    for sid, infos in sorted(snapshot_ids(store).items()):
        names = {i.key.rsplit("/", 1)[1] for i in infos}
        newest = max(i.modified for i in infos)
        if INDEX in names or INDEX_COPY in names:
            try:
                index, ok, detail = load_index(store, trusted, sid)
            except (NotFound, IntegrityError) as exc:
                out.append(Listed(sid, None, False, f"damaged: {exc}", newest))
                continue
            if set_name is None or index.set == set_name:
                out.append(Listed(sid, index, ok, detail, newest))
        elif set_name is None or sid.split("-")[1] == set_name:
            out.append(Listed(sid, None, False, "in progress" if MARKER in names else "incomplete", newest))
    return out


def trusted_index(store: ObjectStore, trusted: dict[str, str], sid: str, *, set_name: str | None = None,
                  purpose: str = "restore") -> SnapshotIndex:
    """The index of ``sid`` ('latest' = the newest trusted snapshot, of ``set_name`` when given),
    refusing an untrusted signature."""
    if sid == "latest":
        done = [s for s in list_snapshots(store, trusted, set_name) if s.index is not None and s.signature_ok]
        if not done:
            raise NotFound("no trusted file-set snapshot" + (f" of set {set_name}" if set_name else "")
                           + ": run `bvh-ops files snapshot` first")
        return max(done, key=lambda s: (s.index.finished_at, s.snapshot_id)).index
    index, ok, detail = load_index(store, trusted, sid)
    if not ok:
        raise IntegrityError(f"file-set snapshot {sid}: index {detail}; refusing to {purpose} from it")
    return index


def iter_entries(store: ObjectStore, sid: str, identities: list[Identity]) -> Iterator[Entry]:
    key = snapshot_prefix(sid) + ENTRIES
    with store.open_reader(key) as body:
        reader = DecryptingReader(body, identities, bind=key, envelopes=store_envelopes(store))
        rest = b""
        while chunk := reader.read(1 << 20):
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for line in lines:
                if line:
                    yield Entry.from_json(json.loads(line))
        if rest.strip():
            yield Entry.from_json(json.loads(rest))


def read_refs(store: ObjectStore, index: SnapshotIndex) -> set[str]:
    import hashlib

    raw = store.get_bytes(snapshot_prefix(index.snapshot_id) + REFS)
    if hashlib.sha256(raw).hexdigest() != index.refs_sha256:
        raise IntegrityError(f"file-set snapshot {index.snapshot_id}: {REFS} does not match its index")
    return set(raw.decode().split())


def delete_snapshot(store: ObjectStore, sid: str) -> int:
    """Index first (the snapshot stops existing at once), then the rest; chunks stay for gc."""
    keys = [o.key for o in store.list(snapshot_prefix(sid))]
    keys.sort(key=lambda k: (not k.endswith((INDEX, INDEX_COPY)), k))
    for key in keys:
        try:
            store.delete(key)
        except NotFound:
            pass
    return len(keys)


def live_markers(store: ObjectStore, now: datetime) -> list[tuple[str, datetime]]:
    """In-progress snapshots younger than STALE_HOURS: (snapshot id, marker time)."""
    out = []
    for sid, infos in snapshot_ids(store).items():
        for info in infos:
            if info.key.endswith("/" + MARKER) and now - info.modified < timedelta(hours=STALE_HOURS):
                out.append((sid, info.modified))
    return sorted(out, key=lambda m: m[1])


def gc_running(store: ObjectStore, now: datetime) -> bool:
    try:
        info = store.stat(GC_LOCK)
    except StorageError:
        return False
    return info is not None and now - info.modified < timedelta(hours=STALE_HOURS)
