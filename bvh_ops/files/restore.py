"""Restore a snapshot (or some of its paths) under a target directory, or in place.

Never writes outside the target: the whole manifest is checked first (no absolute path, no
'..', nothing below a symlink entry), then every parent directory is opened component by
component with O_NOFOLLOW relative to its parent's descriptor (openat), and every file is created
with O_EXCL|O_NOFOLLOW under a temporary name, then renamed into place (rename follows no link):
a symlink already in the target, or one planted while we run, is never followed, and a file that
fails its check half-way leaves nothing behind. What a file or link replaces is kept beside it as
NAME.bvh-replaced-<time>, in a target directory as in place. Each chunk is checked against its keyed address before a
byte of it is written. Modes, mtimes and (when root) owners are restored; directories get theirs
last, deepest first, since writing into a directory changes its mtime.

Hard links are restored as separate files (the snapshot stores each path as its own entry).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bvh_ops.errors import IntegrityError
from bvh_ops.files.catalog import iter_entries, trusted_index
from bvh_ops.files.content import address, open_sealed_key
from bvh_ops.files.layout import COMMANDS_DIR, Entry, check_entry_path, check_manifest_paths
from bvh_ops.files.packs import BlobReader
from bvh_ops.keys import Identity
from bvh_ops.storage.base import ObjectStore

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class RestoreResult:
    snapshot_id: str
    target: str
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    replaced: list[str] = field(default_factory=list)   # in place: where the overwritten copies went
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"snapshot_id": self.snapshot_id, "target": self.target, "files": self.files, "dirs": self.dirs,
                "symlinks": self.symlinks, "bytes": self.bytes, "replaced": self.replaced,
                "seconds": round(self.seconds, 3)}


def select(entries: list[Entry], paths: list[str]) -> list[Entry]:
    """Entries equal to or below any of ``paths`` (given with or without the leading '/')."""
    if not paths:
        return entries
    wanted = [p.strip("/") for p in paths]
    return [e for e in entries if any(e.path == w or e.path.startswith(w + "/") for w in wanted)]


def restore_snapshot(store: ObjectStore, trusted: dict[str, str], identities: list[Identity], snapshot_id: str,
                     paths: list[str], target_dir: Path | None, *, in_place: bool = False,
                     set_name: str | None = None, replaced: list[str] | None = None) -> RestoreResult:
    """Restore ``paths`` (all when empty) of the snapshot under ``target_dir``, or, ``in_place``,
    to their original places. Either way what a file or link replaces is kept beside it as
    ``NAME.bvh-replaced-<ts>`` (a target directory that already holds the path loses nothing).
    ``replaced``, when given, receives each kept copy's full path as it is made (so a caller still
    knows them when the restore fails half-way)."""
    t0 = time.monotonic()
    index = trusted_index(store, trusted, snapshot_id, set_name=set_name)
    entries = list(iter_entries(store, index.snapshot_id, identities))
    check_manifest_paths(entries)                    # refuse a malicious manifest before writing anything
    chosen = select(entries, paths)
    if paths and not chosen:
        raise IntegrityError(f"snapshot {index.snapshot_id} holds none of {', '.join(paths)}")
    if in_place:
        chosen = [e for e in chosen if not e.path.startswith(COMMANDS_DIR + "/") and e.path != COMMANDS_DIR]
        target = Path("/")
    else:
        if target_dir is None:
            raise IntegrityError("give --target-dir DIR (or --in-place)")
        target = Path(target_dir)
        target.mkdir(parents=True, exist_ok=True)
    ckey = open_sealed_key(store, index.content_key_id, identities)
    result = RestoreResult(index.snapshot_id, str(target), replaced=replaced if replaced is not None else [])
    suffix = f".bvh-replaced-{time.strftime('%Y%m%dT%H%M%S')}"
    root = os.open(target, _DIR_FLAGS)
    blobs = BlobReader(store, identities)   # manifest order is pack order: each pack read once
    try:
        dirs: list[Entry] = []
        for e in chosen:
            parts = check_entry_path(e.path)
            parent = _open_parents(root, parts[:-1], e.path)
            try:
                _restore_one(blobs, ckey, parent, parts[-1], e, result, suffix)
            finally:
                os.close(parent)
            if e.type == "dir":
                dirs.append(e)
        for e in sorted(dirs, key=lambda d: d.path.count("/"), reverse=True):
            parts = check_entry_path(e.path)
            fd = _open_parents(root, parts, e.path)
            try:
                _set_meta(fd, e)
            finally:
                os.close(fd)
    finally:
        blobs.close()
        os.close(root)
    result.seconds = time.monotonic() - t0
    return result


def _open_parents(root: int, parts: tuple[bytes, ...], path: str) -> int:
    """A descriptor of root/parts..., creating missing directories, following no symlink."""
    cur = os.dup(root)
    for comp in parts:
        try:
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
        except FileNotFoundError:
            os.mkdir(comp, 0o700, dir_fd=cur)
            nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
        except OSError as exc:
            os.close(cur)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise IntegrityError(f"restoring {path!r}: {os.fsdecode(comp)!r} in the target is a symlink or not "
                                     "a directory: refusing to write through it") from None
            raise
        os.close(cur)
        cur = nxt
    return cur


def _clear(parent: int, name: bytes, backup_suffix: str, result: RestoreResult, *, keep_dir: bool,
           path: str = "") -> bool:
    """Make room for ``name`` (what is there kept as NAME``backup_suffix``); True when a directory
    is already there and kept."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        raise IntegrityError(f"{os.fsdecode(name)!r} is a directory in the target where the snapshot has a file")
    kept = _kept_name(parent, name, os.fsencode(backup_suffix))
    os.rename(name, kept, src_dir_fd=parent, dst_dir_fd=parent)
    where = os.path.dirname(path) if path else ""
    result.replaced.append(os.path.join(result.target, where, os.fsdecode(kept)))
    return False


NAME_MAX = 255


def _utf8_cut(name: bytes, limit: int) -> bytes:
    """``name`` cut to ``limit`` bytes, not inside a UTF-8 character."""
    if len(name) <= limit:
        return name
    cut = name[:limit]
    while cut and cut[-1] & 0xC0 == 0x80:  # continuation bytes of a character cut short
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:  # and its lead byte
        cut = cut[:-1]
    return cut


def _kept_name(parent: int, name: bytes, suffix: bytes) -> bytes:
    """NAME + suffix for what a restore replaces, unused in ``parent`` and within NAME_MAX: a
    long name is shortened (its start kept), and a second restore in the same second gets -2, -3…"""
    for n in range(1, 10_000):
        tail = suffix + (b"" if n == 1 else b"-%d" % n)
        kept = _utf8_cut(name, NAME_MAX - len(tail)) + tail
        if not _exists(parent, kept):
            return kept
    raise IntegrityError(f"no free name to keep {os.fsdecode(name)!r} under: clear the *.bvh-replaced-* copies")


def _exists(parent: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


_tmp_seq = itertools.count()


def _tmp_name() -> bytes:
    """A name of this process's own for a file or link being written (short: any NAME_MAX)."""
    return f".bvh-restoring-{os.getpid()}-{next(_tmp_seq)}".encode()


def _restore_one(blobs: BlobReader, ckey: bytes, parent: int, name: bytes, e: Entry, result: RestoreResult,
                 backup_suffix: str) -> None:
    """A file or link is written whole under a temporary name first, and only then takes its
    place: a chunk that fails its check leaves what was there untouched and no partial file
    behind; what it replaces is kept beside it (``backup_suffix``), never unlinked."""
    root = os.geteuid() == 0
    if e.type == "dir":
        if not _clear(parent, name, backup_suffix, result, keep_dir=True, path=e.path):
            os.mkdir(name, 0o700, dir_fd=parent)
        result.dirs += 1
        return
    tmp = _tmp_name()
    try:
        if e.type == "symlink":
            os.symlink(os.fsencode(e.target or ""), tmp, dir_fd=parent)
            if root:
                os.chown(tmp, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
            os.utime(tmp, ns=(e.mtime_ns, e.mtime_ns), dir_fd=parent, follow_symlinks=False)
        else:
            fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=parent)
            with os.fdopen(fd, "wb") as fh:
                for c in e.chunks:
                    data = blobs.read(c)
                    if len(data) != c.size or address(ckey, data) != c.address:
                        raise IntegrityError(f"chunk {c.address[:12]}… of {e.path!r} does not match its address")
                    fh.write(data)
                fh.flush()
                _set_meta(fh.fileno(), e)
        _clear(parent, name, backup_suffix, result, keep_dir=False, path=e.path)
        os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)  # (replaces a name, follows no link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=parent)
        raise
    if e.type == "symlink":
        result.symlinks += 1
    else:
        result.files += 1
        result.bytes += e.size


def _set_meta(fd: int, e: Entry) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, e.uid, e.gid)
    os.fchmod(fd, e.mode)   # after chown: chown clears setuid/setgid bits
    os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
