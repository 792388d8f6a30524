"""file:// repository. Writes go to a hidden temporary name in the same directory and are
renamed into place after fsync, so a reader never sees half an object."""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from bvh_ops.errors import AlreadyExists, NotFound, StorageError
from bvh_ops.storage.base import ObjectInfo, Upload

TMP_MARK = ".tmp-"
TMP_HEX = 4  # random bytes in a writer's temporary name: .tmp-<object name>.<8 hex digits>
# Exactly the names _LocalWriter gives: another program's ".tmp-" file is not an upload of ours.
_UPLOAD_NAME = re.compile(rf"^{re.escape(TMP_MARK)}(?P<name>.+)\.[0-9a-f]{{{2 * TMP_HEX}}}$")
# Nothing for other local users: manifests name tables and row counts. The group is for the
# operator beside the server's OS user (which writes wal/); see README "Security".
FILE_MODE = 0o640
DIR_MODE = 0o750


# One thread at a time creates directories: between another thread's mkdir and its chown, a
# file written into the new directory would take the directory's transient owner (root).
_DIRS_LOCK = threading.Lock()


def _mkdirs(path: Path) -> None:
    """Create ``path`` and missing parents with DIR_MODE (Path.mkdir gives parents the default),
    each owned as its parent is (``_inherit_owner``)."""
    with _DIRS_LOCK:
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            _inherit_owner(d, os.open(d, os.O_RDONLY | os.O_DIRECTORY))


def _inherit_owner(path: Path, fd: int, *, close: bool = True) -> None:
    """Root writing into a directory another user owns (a file:// repository's ``wal/``, which
    the server's OS user writes through archive_command and reads through restore_command) gives
    the new file or directory that directory's owner and group, so that user can still read it:
    a replica filled by ``bvh-ops replicate`` or an index entry rewritten by key rotation would
    otherwise be root's alone and a standby's wal-fetch would be refused. Nothing changes for
    anyone but root, nor under a directory root owns."""
    try:
        if os.geteuid() == 0:
            st = os.stat(path.parent)
            if st.st_uid != 0:
                os.fchown(fd, st.st_uid, st.st_gid)
    finally:
        if close:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalWriter:
    def __init__(self, final: Path, *, if_absent: bool = False) -> None:
        self._final = final
        self._if_absent = if_absent
        self._tmp = final.with_name(f"{TMP_MARK}{final.name}.{secrets.token_hex(TMP_HEX)}")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        try:
            _inherit_owner(final, fd, close=False)
        except OSError:
            os.close(fd)
            self._tmp.unlink(missing_ok=True)
            raise
        self._fh = os.fdopen(fd, "wb")  # closed in commit/abort
        self._done = False

    def write(self, data: bytes) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            raise StorageError(f"writing {self._final}: {exc.strerror}") from None

    def commit(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            if self._if_absent:
                # link(2) fails if the target exists: no overwrite even in a race.
                os.link(self._tmp, self._final)
                self._tmp.unlink()
            else:
                os.replace(self._tmp, self._final)
            # The new name must survive a crash before the caller reports it (a WAL index
            # entry is the commit point PostgreSQL's archiver is told about).
            _fsync_dir(self._final.parent)
        except FileExistsError:
            self.abort()
            raise AlreadyExists(f"object {self._final.name} already exists") from None
        except OSError as exc:
            self.abort()
            raise StorageError(f"committing {self._final}: {exc.strerror}") from None
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            # Closing flushes what is still buffered, which fails as the write or commit did
            # (disk full, quota): the descriptor is closed all the same, and the file goes.
            self._fh.close()
        except OSError:
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


class LocalStore:
    """Repository on a local or mounted file system."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")
        return self.root / key

    def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"repository {self.root} is not a directory: fix repository")
        try:
            _mkdirs(self.root)
        except OSError as exc:
            raise StorageError(f"repository {self.root} is not usable: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"repository {self.root} is not writable: fix its permissions")

    def open_writer(self, key: str, *, if_absent: bool = False) -> _LocalWriter:
        path = self._path(key)
        try:
            _mkdirs(path.parent)
            return _LocalWriter(path, if_absent=if_absent)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror}") from None

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise NotFound(f"object {key} not found in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror}") from None

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if if_absent and self._path(key).exists():
            raise AlreadyExists(f"object {key} already exists")
        w = self.open_writer(key, if_absent=if_absent)
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        try:
            w.commit()
        except AlreadyExists:
            raise AlreadyExists(f"object {key} already exists") from None

    def get_bytes(self, key: str) -> bytes:
        with self.open_reader(key) as fh:
            return fh.read()

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        if not base.exists():
            return

        def unreadable(exc: OSError) -> None:
            # A directory gone meanwhile (a concurrent delete) holds nothing to list; one that
            # cannot be read would make every total and listing quietly short.
            if not isinstance(exc, FileNotFoundError):
                raise StorageError(f"cannot list {exc.filename}: {exc.strerror}: fix its permissions") from None

        for dirpath, _dirs, files in os.walk(base, onerror=unreadable):
            for name in sorted(files):
                full = Path(dirpath) / name
                rel = full.relative_to(self.root).as_posix()
                try:
                    st = full.stat()
                except FileNotFoundError:
                    continue
                yield ObjectInfo(rel, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def uploads(self) -> Iterator[Upload]:
        """Every hidden ``.tmp-<name>.<8 hex>`` file under the root (the names our writer gives;
        another program's ``.tmp-`` file is not ours): an upload being written, or one that a
        crash (kill -9, power loss) cut off before its commit or abort."""
        unreadable: list[OSError] = []
        for dirpath, _dirs, files in os.walk(self.root, onerror=unreadable.append):
            for name in files:
                if (m := _UPLOAD_NAME.match(name)) is None:
                    continue
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:  # committed or aborted since the listing
                    continue
                except OSError as exc:  # seen by name, not looked at (a directory with r but not x)
                    unreadable.append(exc)
                    continue
                rel = path.relative_to(self.root).as_posix()
                final = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
                final += m.group("name")
                yield Upload(final, rel, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))
        if unreadable:  # what is in there was not looked at: never a clean listing
            exc = unreadable[0]
            raise StorageError(f"cannot list {exc.filename}: {exc.strerror}"
                               + (f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""))

    def discard_upload(self, upload: Upload) -> None:
        path = self._path(upload.handle)
        if _UPLOAD_NAME.match(path.name) is None:
            raise StorageError(f"{upload.handle} is not an upload")
        path.unlink(missing_ok=True)

    def lock_enabled(self) -> bool:
        """file:// has no object lock: nothing stops a delete (say so where a lock was wanted)."""
        return False

    def retained_until(self, key: str) -> datetime | None:
        """Always None: a file has no retain-until."""
        return None

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror}") from None
        # Remove now-empty parent directories, but never the top-level ones (backups/, wal/):
        # they may belong to another OS user (the server's, for wal/) that could not recreate them.
        parent = path.parent
        while parent != self.root and parent.parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
