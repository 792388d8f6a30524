"""The unchanged-file cache: per file set, what each regular file looked like (size, mtime, ctime,
inode, device) when a committed snapshot last read it, and its chunk references. A file that
still looks the same is not read again: its entry gets the remembered chunks (each checked to be
still in the repository). Like restic's parent-snapshot check and Git's index, including Git's
"racy" rule: a file whose mtime or ctime is not older than the moment its read started by more
than a timestamp tick is not remembered (it could change again within the same tick unseen).

Kept in ``state_dir/files-cache/<set>.sqlite`` (bounded memory: looked up per path, never loaded
whole); a snapshot writes a fresh cache beside it and renames it into place only after the
snapshot has committed. A cache made for another repository or content key is ignored. Local
state only: deleting it costs one full read of the set.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

from bvh_ops.files.layout import Chunk

RACY_NS = 50_000_000   # larger than a file-system timestamp tick (jiffies: 1-10 ms)
CACHE_DIR = "files-cache"


def cache_dir(state_dir: Path) -> Path:
    return Path(state_dir) / CACHE_DIR


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


class FileCache:
    """Lookups in the previous cache, records into the next one; ``commit()`` swaps them."""

    def __init__(self, state_dir: Path, set_name: str, *, scope: str) -> None:
        d = cache_dir(state_dir)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = d / f"{set_name}.sqlite"
        self._new_path = d / f".tmp-{set_name}.{os.getpid()}.sqlite"
        self._new_path.unlink(missing_ok=True)
        self._old: sqlite3.Connection | None = None
        if self._path.is_file():
            try:
                old = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True)
                row = old.execute("SELECT v FROM meta WHERE k = 'scope'").fetchone()
                if row and row[0] == scope:
                    self._old = old
                else:
                    old.close()
            except sqlite3.Error:
                self._old = None   # unreadable: a full read, and a fresh cache
        self._new = sqlite3.connect(self._new_path)
        self._new.execute("PRAGMA journal_mode = OFF")
        self._new.execute("PRAGMA synchronous = OFF")   # a lost cache costs one full read, nothing else
        self._new.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT)")
        self._new.execute("CREATE TABLE files (path BLOB PRIMARY KEY, size INT, mtime_ns INT, ctime_ns INT, "
                          "ino INT, dev INT, chunks TEXT)")
        self._new.execute("INSERT INTO meta VALUES ('scope', ?)", (scope,))
        self.hits = 0

    def lookup(self, path: bytes, st: os.stat_result) -> tuple[Chunk, ...] | None:
        """The remembered chunks when the file looks as it did; None otherwise."""
        if self._old is None:
            return None
        try:
            row = self._old.execute("SELECT size, mtime_ns, ctime_ns, ino, dev, chunks FROM files WHERE path = ?",
                                    (path,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None or tuple(row[:5]) != _signature(st):
            return None
        return tuple(Chunk.from_json(c) for c in json.loads(row[5]))

    def record(self, path: bytes, st: os.stat_result, chunks: tuple[Chunk, ...], read_started_ns: int) -> None:
        if max(st.st_mtime_ns, st.st_ctime_ns) >= read_started_ns - RACY_NS:
            return   # racy: changed too close to its read to trust the timestamps next time
        self._new.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (path, *_signature(st), json.dumps([c.to_json() for c in chunks])))

    def commit(self) -> None:
        """Make the new cache the one the next snapshot reads (after this snapshot committed)."""
        self._new.commit()
        self._close()
        os.replace(self._new_path, self._path)

    def abort(self) -> None:
        self._close()
        self._new_path.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._old is not None:
            self._old.close()
            self._old = None
        with contextlib.suppress(sqlite3.Error):
            self._new.close()
