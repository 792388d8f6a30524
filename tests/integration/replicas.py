"""A second file:// repository kept in step with a first one by copying (what the replication of
#17 does; here a plain copy in the repository's commit order): objects, then WAL index entries,
then manifests, each with its owner kept (the server's OS user writes wal/)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _mirror_dirs(src_root: Path, dst_root: Path, rel: Path) -> None:
    """Create the directories of ``rel`` under ``dst_root`` with the owner and mode they have
    under ``src_root``."""
    for depth in range(1, len(rel.parts)):
        part = Path(*rel.parts[:depth])
        d = dst_root / part
        if not d.exists():
            d.mkdir()
            st = (src_root / part).stat()
            os.chown(d, st.st_uid, st.st_gid)
            os.chmod(d, st.st_mode & 0o7777)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.copy")
    shutil.copy2(src, tmp)
    fst = src.stat()
    os.chown(tmp, fst.st_uid, fst.st_gid)
    os.replace(tmp, dst)


def sync_repository(src: Path, dst: Path, *, skip: set[str] = frozenset()) -> list[str]:
    """Copy what ``src`` has and ``dst`` lacks (names in ``skip`` left out); returns the keys
    copied. Commit order: data objects, then WAL index entries, then manifests."""
    dst.mkdir(parents=True, exist_ok=True)
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, st.st_mode & 0o7777)
    todo = []
    for path in src.rglob("*"):
        if not path.is_file() or path.name.startswith(".") or path.name in skip:
            continue
        rel = path.relative_to(src)
        if not (dst / rel).exists() and not rel.parts[0] == "fence":
            todo.append(rel)

    def order(rel: Path) -> tuple[int, str]:
        name = rel.name
        last = name.startswith("manifest.json") or (rel.parts[0] == "wal" and name.endswith(".json"))
        return (2 if name.startswith("manifest.json") else 1 if last else 0, str(rel))

    for rel in sorted(todo, key=order):
        _mirror_dirs(src, dst, rel)
        _copy(src / rel, dst / rel)
    return [str(r) for r in todo]
