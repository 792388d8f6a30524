"""Walk a file set's sources: globs expanded, excludes applied, symlinks never followed
(``lstat``/``scandir`` without following), paths kept as bytes. Regular files, directories and
symlinks are yielded; sockets, devices and FIFOs are skipped and listed; an unreadable
directory is a problem (the snapshot becomes partial), never a silent gap."""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class WalkReport:
    skipped: list[str] = field(default_factory=list)   # special files: "path (socket)"
    problems: list[str] = field(default_factory=list)  # unreadable: "path: reason"


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return None


def _special(mode: int) -> str:
    for test, name in ((stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "char device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "unknown type"


def excluded(path: bytes, patterns: list[bytes]) -> bool:
    """A glob matches the full path or the base name (``*.tmp``, ``/srv/app/cache/*``)."""
    base = os.path.basename(path)
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(base, p) for p in patterns)


def roots(paths: list[str]) -> list[bytes]:
    """Absolute paths, globs expanded (a glob matching nothing yields nothing; a plain path is
    kept even when missing, so the walk reports it)."""
    out: list[bytes] = []
    for p in paths:
        raw = os.fsencode(p)
        if glob.has_magic(raw):
            out.extend(sorted(glob.glob(raw)))
        else:
            out.append(os.path.normpath(raw))
    seen: set[bytes] = set()
    return [r for r in out if not (r in seen or seen.add(r))]


def walk(paths: list[str], exclude: list[str], report: WalkReport) -> Iterator[tuple[bytes, os.stat_result, str]]:
    """(absolute path, lstat, type) in a stable order: a directory before its children."""
    patterns = [os.fsencode(p) for p in exclude]
    for root in roots(paths):
        if excluded(root, patterns):
            continue
        try:
            st = os.lstat(root)
        except OSError as exc:
            report.problems.append(f"{os.fsdecode(root)}: {exc.strerror}")
            continue
        yield from _visit(root, st, patterns, report)


def _visit(path: bytes, st: os.stat_result, patterns: list[bytes],
           report: WalkReport) -> Iterator[tuple[bytes, os.stat_result, str]]:
    kind = _kind(st.st_mode)
    if kind is None:
        report.skipped.append(f"{os.fsdecode(path)} ({_special(st.st_mode)})")
        return
    yield path, st, kind
    if kind != "dir":
        return
    try:
        with os.scandir(path) as it:
            children = sorted(it, key=lambda d: d.name)
    except OSError as exc:
        report.problems.append(f"{os.fsdecode(path)}: {exc.strerror}")
        return
    for child in children:
        cpath = child.path
        if excluded(cpath, patterns):
            continue
        try:
            cst = child.stat(follow_symlinks=False)
        except OSError as exc:
            report.problems.append(f"{os.fsdecode(cpath)}: {exc.strerror}")
            continue
        yield from _visit(cpath, cst, patterns, report)
