"""WAL archiving: `bvh-ops wal-push %p` (archive_command) and `bvh-ops wal-fetch %f %p`
(restore_command). Each WAL file (segment, .history, .backup, .partial) is compressed, encrypted
with its own data key sealed to the recipients, and stored under wal/<timeline>/<name>, with a
small index entry holding its plaintext digest (sha256, or BLAKE3 with ``wal_digest = blake3``)
so a re-push is recognised without any private key. An upload never replaces an object: when
its key is taken (another writer of the same name under way, or the leftover of an upload that
never committed) the object goes to an alternate key of its own, ``<name>@<16 hex>``, which the
entry records under "object"; the entry written first wins, and it names its own object. Any failure exits non-zero so PostgreSQL keeps the file and retries; an existing name with
different content is refused and never overwritten."""

from __future__ import annotations

import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from bvh_ops.config import Settings
from bvh_ops.errors import AlreadyExists, BvhOpsError, IntegrityError, NotFound, TransientStorageError
from bvh_ops.keys import Recipient, load_identities, load_recipients
from bvh_ops.pg.lsn import SEGMENT_OR_PARTIAL, WAL_FILE
from bvh_ops.storage import ObjectStore, open_store
from bvh_ops.stream import (
    DecryptingReader,
    EncryptingWriter,
    entry_envelopes,
    envelopes_json,
    plain_hash,
    recorded_digest,
    seal_data_key,
)
from bvh_ops.wal.fence import FenceView

WAL_PREFIX = "wal"
CHUNK = 1 << 20


def wal_key(name: str) -> str:
    """wal/<timeline>/<name>; refuses anything that is not a WAL file name."""
    if not WAL_FILE.match(name):
        raise BvhOpsError(f"{name!r} is not a WAL file name")
    timeline = name[:8]
    return f"{WAL_PREFIX}/{timeline}/{name}"


_ALTERNATE = re.compile(r"@[0-9a-f]{16}")


def alternate_key(key: str) -> str:
    """A fresh alternate key for the object of ``key``: ``key@<16 hex>``."""
    return f"{key}@{secrets.token_hex(8)}"


def split_alternate(name: str) -> tuple[str, bool]:
    """("<name>", True) for an alternate object's last path part "<name>@<16 hex>", else
    (name, False)."""
    base, at, tail = name.partition("@")
    if at and _ALTERNATE.fullmatch(at + tail):
        return base, True
    return name, False


def entry_object(key: str, entry: dict) -> str:
    """The object that the index entry ``key``.json describes: ``key`` itself, or the alternate
    ``key@<16 hex>`` it records under "object". Any other key is refused: an entry never points
    at another file's object."""
    obj = entry.get("object")
    if obj is None or obj == key:
        return key
    if isinstance(obj, str) and obj.startswith(key) and _ALTERNATE.fullmatch(obj[len(key):]):
        return obj
    raise IntegrityError(f"{key}.json names the object {obj!r}, which is not one of its own")


def wal_object_key(name: str, entry: dict) -> str:
    """The object of WAL file ``name`` as its index entry ``entry`` records it."""
    return entry_object(wal_key(name), entry)


def is_archived(store: ObjectStore, name: str) -> bool:
    """Whether WAL file ``name`` is committed: its index entry and the object it names exist."""
    try:
        return store.stat(wal_object_key(name, json.loads(store.get_bytes(wal_key(name) + ".json")))) is not None
    except (NotFound, ValueError, IntegrityError):
        return False


LONG_HEADER = 40  # bytes of XLogLongPageHeaderData that identify a segment
_XLP_LONG_HEADER = 0x0002


def segment_identity(head: bytes) -> dict | None:
    """What the first page header of a WAL segment says about it (None: not a segment header).
    XLogLongPageHeaderData (access/xlog_internal.h), in the server's byte order (little-endian
    on every platform PostgreSQL packages are built for): magic, info, timeline, page address,
    remaining length, system identifier, segment size, block size."""
    if len(head) < LONG_HEADER:
        return None
    import struct

    magic, info, tli, pageaddr, _rem = struct.unpack_from("<HHIQI", head, 0)
    sysid, seg_size, blcksz = struct.unpack_from("<QII", head, 24)
    if not info & _XLP_LONG_HEADER or seg_size == 0 or seg_size & (seg_size - 1):
        return None
    return {"magic": magic, "timeline": tli, "pageaddr": pageaddr, "system_identifier": str(sysid),
            "segment_size": seg_size, "block_size": blcksz}


def segment_header_problem(name: str, head: bytes, system_identifier: str | None = None) -> str | None:
    """None when the WAL file ``name`` begins with its own first page: the page address is where
    the name says the segment starts (and the cluster is ``system_identifier`` when given).
    Catches a segment stored, swapped or copied under another segment's name."""
    m = SEGMENT_OR_PARTIAL.match(name)
    if m is None:
        return None  # .history / .backup files carry no page header
    ident = segment_identity(head)
    if ident is None:
        return f"{name} does not begin with a WAL segment header"
    seg_size = ident["segment_size"]
    segno = int(m.group(2), 16) * (0x100000000 // seg_size) + int(m.group(3), 16)
    if ident["pageaddr"] != segno * seg_size:
        at = ident["pageaddr"]
        return (f"{name} holds the WAL of {at >> 32:X}/{at & 0xFFFFFFFF:08X}, not of its own position "
                f"{(segno * seg_size) >> 32:X}/{(segno * seg_size) & 0xFFFFFFFF:08X} (swapped or copied segment)")
    if system_identifier is not None and ident["system_identifier"] != str(system_identifier):
        return (f"{name} belongs to database system {ident['system_identifier']}, not {system_identifier} "
                "(another cluster's WAL)")
    return None


def entry_digest(entry: dict) -> tuple[str, str]:
    """(algorithm, hex) of the plaintext digest an index entry records: BLAKE3 where it has one
    (written with ``wal_digest = blake3``), else sha256 (every entry before that setting)."""
    return recorded_digest(entry.get("plaintext_blake3"), entry.get("plaintext_sha256"))


def file_digest(path: Path | str, alg: str) -> str:
    """The hex ``alg`` digest ("sha256" or "blake3") of a file, read in CHUNK pieces."""
    h = plain_hash(alg)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def wal_push(settings: Settings, path: str) -> str:
    """Archive one WAL file; returns 'stored' or 'already archived'."""
    store = open_store(settings)
    staged = wal_upload(settings, path, store=store)
    if staged is None:
        return "already archived"
    wal_commit(settings, staged, store=store)
    return "stored"


WHOLE_MAX = 64 << 20  # WAL files up to this size are read and compressed in one piece (16 MiB segments)


def wal_upload(settings: Settings, path: str, *, store: ObjectStore | None = None,
               recipients: list[Recipient] | None = None, fences: FenceView | None = None) -> dict | None:
    """Store one WAL file's object, without its index entry (so it does not exist for readers
    yet); returns the entry for ``wal_commit``, or None when it is already archived. Uploads may
    run in parallel; commits go in WAL order so the archive never shows a transient gap.
    ``store``, ``recipients`` and a listing of the fences (``fences``) may be shared by the
    files of one pusher; without ``fences`` the fence prefix is listed for this file."""
    src = Path(path)
    if not src.is_file():
        raise NotFound(f"WAL file {path} does not exist")
    key = wal_key(src.name)
    store = store if store is not None else open_store(settings)
    index_key = key + ".json"
    try:
        existing = json.loads(store.get_bytes(index_key))
    except NotFound:
        existing = None
    if existing is not None:
        alg, digest = entry_digest(existing)
        if digest != file_digest(src, alg):
            raise IntegrityError(
                f"{src.name} is already archived with different content: refusing to overwrite "
                "(two clusters archiving into one repository?)")
        if store.stat(wal_object_key(src.name, existing)) is not None:
            return None
        raise IntegrityError(f"{src.name} is archived but its object is missing from the repository: "
                             "run `bvh-ops verify` and take a new physical full backup")
    # A segment is read in one piece: what is hashed, checked and stored is one read of the
    # file. A larger file (wal_segment_size up to 1 GiB) is streamed and hashed twice instead:
    # before, for the entry, and on the way, to catch a change while it was being read.
    whole = src.read_bytes() if src.stat().st_size <= WHOLE_MAX else None
    if whole is not None:
        first = whole[:LONG_HEADER]
    else:
        with open(src, "rb") as fh:
            first = fh.read(LONG_HEADER)
    problem = segment_header_problem(src.name, first)
    if problem:
        # PostgreSQL hands over a segment that begins with its own first page; anything else
        # (a file copied under the wrong name) is refused rather than archived as that segment.
        raise IntegrityError(f"refusing to archive WAL file {problem}")
    # A failover fenced this cluster's old timeline: its old primary must not continue a
    # diverging history into the repository (bvh_ops.wal.fence).
    ident = segment_identity(first) if SEGMENT_OR_PARTIAL.match(src.name) else None
    (fences or FenceView(store)).check(src.name, ident["system_identifier"] if ident else None)
    if recipients is None:
        recipients = load_recipients(settings.require_recipients())
    # Never over another writer's object: an entry (theirs, committed any moment) may describe
    # it. The plain key when free, else an alternate key of our own (a conditional commit decides,
    # so nothing is asked before the upload in the usual case).
    target = key
    try:
        stats, envelopes = _store_object(settings, store, src, whole, target, recipients)
    except AlreadyExists:
        target = alternate_key(key)
        stats, envelopes = _store_object(settings, store, src, whole, target, recipients)
    entry = {"name": src.name, "plaintext_sha256": stats.plaintext_sha256, "plaintext_size": stats.plaintext_size,
             "stored_sha256": stats.stored_sha256, "stored_size": stats.stored_size,
             **({"plaintext_blake3": stats.plaintext_blake3} if stats.plaintext_blake3 else {}),
             "key_ids": [r.key_id for r in recipients],
             # Format 3: the data key sealed to each recipient lives here, not in the object, so a
             # key rotation rewrites this entry and never the object.
             "envelopes": envelopes_json(envelopes),
             # When PostgreSQL last wrote the file: the newest commit it can hold (for
             # --validate-target with a time and for the continuity report).
             "modified_at": datetime.fromtimestamp(src.stat().st_mtime, UTC).isoformat()}
    if target != key:
        entry["object"] = target
    if ident is not None:
        entry["system_identifier"] = ident["system_identifier"]
    if src.name.endswith(".history"):
        # Timeline switch points only (no table data): kept readable so continuity can
        # follow timelines without the restore key.
        entry["history"] = src.read_text(errors="replace")[:65536]
    return entry


def _store_object(settings: Settings, store: ObjectStore, src: Path, whole: bytes | None, key: str,
                  recipients: list[Recipient]) -> tuple:
    """Compress and encrypt ``src`` (``whole`` when read already) into a new object ``key`` under
    a fresh data key; AlreadyExists when ``key`` is taken. Returns (stats, envelopes)."""
    data_key = os.urandom(32)  # fresh for every object, a retry under another key included
    envelopes = seal_data_key(data_key, recipients)
    writer = store.open_writer(key, if_absent=True)
    try:
        enc = EncryptingWriter(sink=writer, data_key=data_key, envelopes=envelopes,
                               compression_level=settings.compression_level,
                               segment_size=settings.segment_size_kib << 10, bind=key,
                               plain_hash_alg=settings.wal_digest)
        if whole is not None:
            enc.write_all(whole)
            stats = enc.close()
        else:
            before = file_digest(src, settings.wal_digest)
            with open(src, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    enc.write(chunk)
            stats = enc.close()
            if stats.plaintext_digest[1] != before:
                raise IntegrityError(f"{src.name} changed while it was being archived")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return stats, envelopes


def wal_commit(settings: Settings, entry: dict, *, store: ObjectStore | None = None) -> None:
    """Write the index entry of an uploaded WAL file: the commit point. ``if_absent`` closes the
    race with a second pusher; the same content from it is fine, different content is not."""
    store = store if store is not None else open_store(settings)
    index_key = wal_key(entry["name"]) + ".json"
    try:
        store.put_bytes(index_key, json.dumps(entry).encode(), if_absent=True)
    except AlreadyExists:
        try:
            again = json.loads(store.get_bytes(index_key))
        except NotFound:  # S3's 409: another writer's conditional write of it is still under way
            raise TransientStorageError(f"{entry['name']}: its index entry is being written by another writer; "
                                        "retry") from None
        if entry_digest(again) != entry_digest(entry):
            raise IntegrityError(f"{entry['name']} was archived concurrently with different content") from None


def wal_fetch(settings: Settings, name: str, dest: str, *, system_identifier: str | None = None) -> None:
    """Restore one WAL file to ``dest`` (written aside, then renamed); NotFound when absent,
    which restore_command reports to PostgreSQL as "no such file" (exit 1). The object must be
    bound to this name, its plaintext must match the index entry, and a segment's first page
    must say it is this segment (of cluster ``system_identifier`` when given): a swapped or
    foreign segment is refused, never handed to recovery."""
    store = open_store(settings)
    try:
        entry = json.loads(store.get_bytes(wal_key(name) + ".json"))
    except NotFound:
        raise NotFound(f"WAL file {name} is not in the archive") from None
    if entry.get("name") != name:
        raise IntegrityError(f"WAL file {name}: its index entry is that of {entry.get('name')!r} (swapped)")
    key = wal_object_key(name, entry)
    identities = load_identities(settings.require_identity())
    target = Path(dest)
    tmp = target.with_name(f".{target.name}.bvh-tmp")
    alg, expected = entry_digest(entry)
    sha = plain_hash(alg)
    body = store.open_reader(key)
    try:
        reader = DecryptingReader(body, identities, bind=key, envelopes=entry_envelopes(entry))
        head = b""
        with open(tmp, "wb") as out:
            while chunk := reader.read(CHUNK):
                if len(head) < LONG_HEADER:
                    head += chunk[: LONG_HEADER - len(head)]
                sha.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha.hexdigest() != expected:
            raise IntegrityError(f"WAL file {name}: plaintext {alg} differs from the archive index")
        problem = segment_header_problem(name, head, system_identifier)
        if problem:
            raise IntegrityError(f"WAL file {problem}")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        body.close()
