"""Take a file-set snapshot, in the order that makes it safe:

1. mark the snapshot in progress (gc keeps everything while a marker is live), and refuse to
   start while a gc holds its lock;
2. walk the sources; a file that looks as the last snapshot saw it (size, mtime, ctime, inode:
   cache.py) is not read, its remembered chunks are reused; any other is read in fixed-size
   chunks, each addressed by its keyed hash and stored once — small ones appended to a pack
   (packs.py), big ones as objects of their own (an address already there costs one ``stat``);
3. run the command sources, their output stored the same way;
4. commit the last open pack and its index, then stream the entries as encrypted JSON lines,
   then the list of referenced objects (chunk addresses and ``pack:<id>``);
5. write the signed index last (copy first, then the index): the commit point. A snapshot
   without an index does not exist; its packs and chunks are garbage once no index references
   them. Only then does the unchanged-file cache of this run replace the previous one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import stat
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from bvh_ops.config import FileSet, Settings
from bvh_ops.errors import ConcurrencyError, StorageError
from bvh_ops.files import catalog
from bvh_ops.files.cache import FileCache, cache_dir
from bvh_ops.files.capture import run_command
from bvh_ops.files.content import ChunkStore, key_id, load_content_key, save_data_key_record
from bvh_ops.files.layout import (
    CHUNK_SIZE,
    COMMANDS_DIR,
    ENTRIES,
    INDEX,
    INDEX_COPY,
    MARKER,
    REFS,
    Chunk,
    Entry,
    SnapshotIndex,
    sign_index,
    snapshot_prefix,
    stored_path,
)
from bvh_ops.files.packs import Batching
from bvh_ops.files.walk import WalkReport, walk
from bvh_ops.keys import load_identities, load_recipients
from bvh_ops.repository.open import open_repository
from bvh_ops.stream import EncryptingWriter, seal_data_key

log = logging.getLogger("bvh_ops.files")


@dataclass
class SnapshotResult:
    snapshot_id: str
    set: str
    files: int = 0
    bytes_in: int = 0
    bytes_stored: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0
    files_unchanged: int = 0   # not read: the cache says they look as the last snapshot saw them
    packs_new: int = 0
    partial: bool = False
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "set": self.set, "files": self.files, "bytes_in": self.bytes_in,
                "bytes_stored": self.bytes_stored, "partial": self.partial, "problems": self.problems,
                "skipped": self.skipped, "chunks_new": self.chunks_new, "chunks_reused": self.chunks_reused,
                "files_unchanged": self.files_unchanged, "packs_new": self.packs_new, "seconds": round(self.seconds, 3)}


def new_snapshot_id(set_name: str, now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{set_name}-{os.urandom(3).hex()}"


def take_snapshot(settings: Settings, set_name: str, *, now: datetime | None = None) -> SnapshotResult:
    """Snapshot the configured set ``set_name``; returns what it stored and every problem."""
    fs = settings.file_set(set_name)
    started = now or datetime.now(UTC)
    t0 = time.monotonic()
    repo, host_key = open_repository(settings)
    store = repo.store
    recipients = load_recipients(settings.require_recipients())
    identities = load_identities(settings.identity) if settings.identity else None
    data_key = os.urandom(32)
    envelopes = seal_data_key(data_key, recipients)
    save_data_key_record(store, data_key, envelopes)  # format 3: before any object sealed with it
    ckey = load_content_key(settings.state_dir, store, data_key=data_key, envelopes=envelopes, identities=identities)
    kid = key_id(ckey)
    repo_tag = hashlib.sha256(store.url.encode()).hexdigest()[:16]
    chunks = ChunkStore(store, ckey, data_key, envelopes, settings.compression_level, settings.segment_size_kib << 10,
                        pack_cache=cache_dir(settings.state_dir) / f"packs-{repo_tag}")

    sid = new_snapshot_id(fs.name, started)
    prefix = snapshot_prefix(sid)
    result = SnapshotResult(sid, fs.name)
    store.put_bytes(prefix + MARKER, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                 "started_at": started.isoformat()}).encode())
    if catalog.gc_running(store, datetime.now(UTC)):
        store.delete(prefix + MARKER)
        raise ConcurrencyError("a file-set garbage collection is running on this repository: snapshot again "
                               "when it has finished")
    refs: set[str] = set()
    assert chunks.packs is not None
    result.problems.extend(f"{d} (its blobs are stored again; run `bvh-ops files verify`)"
                           for d in chunks.packs.damaged)
    cache = FileCache(settings.state_dir, fs.name, scope=f"{store.url} {kid}")
    sink = store.open_writer(prefix + ENTRIES)
    try:
        enc = Batching(EncryptingWriter(sink=sink, data_key=data_key, compression_level=settings.compression_level,
                                        segment_size=settings.segment_size_kib << 10, bind=prefix + ENTRIES))
        for entry in _entries(fs, chunks, cache, result):
            refs.update(c.ref() for c in entry.chunks)
            enc.write(json.dumps(entry.to_json()).encode() + b"\n")
            result.files += 1
        chunks.writer.flush()   # every pack committed before anything references it
        result.bytes_stored += chunks.writer.stored_bytes
        result.packs_new = chunks.writer.packs_written
        entries_stats = enc.close()
        sink.commit()
        refs_raw = "".join(a + "\n" for a in sorted(refs)).encode()
        store.put_bytes(prefix + REFS, refs_raw)
        result.partial = bool(result.problems)
        result.bytes_stored += entries_stats.stored_size + len(refs_raw)
        index = SnapshotIndex(
            snapshot_id=sid, set=fs.name, klass=fs.class_, host=socket.gethostname(),
            started_at=started.isoformat(), finished_at=datetime.now(UTC).isoformat(), files=result.files,
            bytes_in=result.bytes_in, bytes_stored=result.bytes_stored, partial=result.partial,
            problems=len(result.problems), content_key_id=kid,
            key_ids=tuple(r.key_id for r in recipients), entries_sha256=entries_stats.stored_sha256,
            entries_size=entries_stats.stored_size, refs_sha256=hashlib.sha256(refs_raw).hexdigest(),
            refs_count=len(refs))
        raw = sign_index(index, host_key)
        store.put_bytes(prefix + INDEX_COPY, raw)
        store.put_bytes(prefix + INDEX, raw)  # the commit point
        result.bytes_stored += 2 * len(raw)
    except BaseException:
        sink.abort()
        chunks.writer.abort()
        cache.abort()
        catalog.delete_snapshot(store, sid)  # its packs and chunks are unreferenced garbage for gc
        raise
    cache.commit()
    try:
        store.delete(prefix + MARKER)
    except StorageError:
        log.warning("could not remove the in-progress marker of %s", sid)
    result.seconds = time.monotonic() - t0
    return result


def _entries(fs: FileSet, chunks: ChunkStore, cache: FileCache, result: SnapshotResult):
    report = WalkReport()
    for path, st, kind in walk(fs.paths, fs.exclude, report):
        rel = stored_path(path)
        if not rel:   # the root directory itself: its children carry everything
            continue
        if kind == "dir":
            yield Entry(rel, "dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
        elif kind == "symlink":
            try:
                target = os.fsdecode(os.readlink(path))
            except OSError as exc:
                result.problems.append(f"{os.fsdecode(path)}: {exc.strerror}")
                continue
            yield Entry(rel, "symlink", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                        target=target)
        else:
            remembered = cache.lookup(path, st)
            if remembered is not None and all(chunks.has(c) for c in remembered):
                result.files_unchanged += 1
                result.chunks_reused += len(remembered)
                cache.record(path, st, remembered, time.time_ns())
                yield Entry(rel, "file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size,
                            remembered)
                continue
            read_started = time.time_ns()
            got = _read_file(path, rel, chunks, result)
            if got is not None:
                entry, after = got
                if not entry.changed_while_read:
                    cache.record(path, after, entry.chunks, read_started)
                yield entry
    result.skipped.extend(report.skipped)
    result.problems.extend(report.problems)
    for cmd in fs.commands:
        captured = run_command(cmd.name, cmd.argv, cmd.timeout_seconds)
        if captured.output is None:
            result.problems.append(captured.problem or f"command {cmd.name} failed")
            continue
        with captured.output as fh:
            parts, size = _store_stream(fh, chunks, result)
        now_ns = time.time_ns()
        yield Entry(f"{COMMANDS_DIR}/{cmd.name}", "file", 0o600, os.getuid(), os.getgid(), now_ns, size, parts)


def _store_stream(fh: BinaryIO, chunks: ChunkStore, result: SnapshotResult) -> tuple[tuple[Chunk, ...], int]:
    parts, size = [], 0
    while data := fh.read(CHUNK_SIZE):
        chunk, new = chunks.put(data)
        parts.append(chunk)
        size += len(data)
        result.bytes_in += len(data)
        if new:
            result.bytes_stored += chunk.stored_size   # 0 for a packed blob: its pack is counted when committed
            result.chunks_new += 1
        else:
            result.chunks_reused += 1
    return tuple(parts), size


def _read_file(path: bytes, rel: str, chunks: ChunkStore,
               result: SnapshotResult) -> tuple[Entry, os.stat_result] | None:
    """Read a regular file; a change while reading (size or mtime before vs after) is re-read
    once, then stored as read and marked (the snapshot becomes partial)."""
    for attempt in (1, 2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            result.problems.append(f"{os.fsdecode(path)}: {exc.strerror}")
            return None
        with os.fdopen(fd, "rb") as fh:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):  # replaced by something else since the walk
                result.skipped.append(f"{os.fsdecode(path)} (no longer a regular file)")
                return None
            parts, size = _store_stream(fh, chunks, result)
            after = os.fstat(fd)
        same = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns) and size == after.st_size
        if same or attempt == 2:
            if not same:
                result.problems.append(f"{os.fsdecode(path)}: changed while being read (stored as read twice)")
            return Entry(rel, "file", stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid, after.st_mtime_ns,
                         size, parts, changed_while_read=not same), after
    return None  # unreachable
