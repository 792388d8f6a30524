"""Where to resume each file of a source (pure). A file is known by its identity, device:inode,
not its name: ``app.log`` renamed to ``app.log.1`` by rotation keeps its inode, so it is read on
from its stored offset to its end, and the new ``app.log`` (a new inode) from 0. A file whose
size is below its stored offset was truncated, and one whose first bytes changed (their sha256)
was replaced under the same inode: both restart at 0, and the plan says so."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HEAD_BYTES = 4096   # the first bytes hashed to recognise a file replaced under the same inode


@dataclass(frozen=True)
class FileState:
    """A file as found now."""

    path: str
    file_id: str            # "device:inode"
    size: int
    mtime: float
    head_sha256: str        # sha256 of its first min(HEAD_BYTES, stored offset) bytes ("" when unknown)


@dataclass(frozen=True)
class Stored:
    """A file's row of ops.log_offsets."""

    file_id: str
    path: str
    offset: int
    head_sha256: str


@dataclass(frozen=True)
class ReadPlan:
    path: str
    file_id: str
    start: int              # byte offset to read from
    restart: str | None     # why the read starts again at 0 ("truncated", "replaced"), else None


def head_length(stored: Stored | None) -> int:
    """How many first bytes to hash for comparison with the stored head."""
    return min(HEAD_BYTES, stored.offset) if stored else 0


def plan_reads(files: Iterable[FileState], stored: Mapping[str, Stored]) -> tuple[list[ReadPlan], list[str]]:
    """The reads to do (oldest file first: a rotated file ends before its successor starts) and
    the stored file_ids no longer present (their rows are removed)."""
    found = sorted(files, key=lambda f: (f.mtime, f.path))
    plans = []
    for f in found:
        prev = stored.get(f.file_id)
        if prev is None:
            plans.append(ReadPlan(f.path, f.file_id, 0, None))
        elif f.size < prev.offset:
            plans.append(ReadPlan(f.path, f.file_id, 0, f"truncated ({f.size} bytes < offset {prev.offset})"))
        elif prev.head_sha256 and f.head_sha256 != prev.head_sha256:
            plans.append(ReadPlan(f.path, f.file_id, 0, "replaced (its first bytes changed)"))
        else:
            plans.append(ReadPlan(f.path, f.file_id, prev.offset, None))
    present = {f.file_id for f in found}
    gone = sorted(fid for fid in stored if fid not in present)
    return plans, gone
