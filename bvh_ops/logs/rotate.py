"""Rotation of the platform's own log files (``[[log_sources]]`` with ``rotate_bytes``), by the
rule of ``bvh_ops.logs.rotation.rotation_plan``: the file the platform writes is renamed only
once the collector committed it to its end, and a rotated file is deleted only once collected to
its end, so no line is lost and none read twice (the collector follows every file by its inode:
lines written between the check and the platform's reopen are read on from the renamed file).

Carrying a rotation out: the platform must be running (its pid file names a live process: a
file renamed away from a platform that is not there to reopen it would only move its next
writes), older rotated files shift up by one (``.2`` -> ``.3`` …, highest first: nothing is
overwritten), the active file becomes ``.1``, the platform is sent its reopen signal and the
new file is waited for. Deletions go first, each only if the file at that path is still the one
planned (same device and inode). Each step is one action in the report."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import psycopg

from bvh_ops.config import LogSource
from bvh_ops.logs import store
from bvh_ops.logs.rotation import LogFile, rotation_plan

REOPEN_WAIT_SECONDS = 5.0


def log_file(path: Path) -> LogFile | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return LogFile(str(path), f"{st.st_dev}:{st.st_ino}", st.st_size)


def rotated_files(active: Path) -> list[tuple[int, Path]]:
    """``active``.1, .2, … that exist, newest (.1) first."""
    pattern = re.compile(re.escape(active.name) + r"\.(\d+)$")
    found = []
    for p in active.parent.iterdir() if active.parent.is_dir() else ():
        if (m := pattern.match(p.name)) and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _action(step: str, path: str, status: str, detail: str, t0: float) -> dict[str, Any]:
    return {"action": step, "object": path, "status": status, "seconds": round(time.monotonic() - t0, 3),
            "detail": detail}


def _platform_pid(source: LogSource) -> tuple[int | None, str]:
    """The platform's pid from its pid file if that process is alive, else (None, why)."""
    path = Path(str(source.reopen_pid_file))
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        return None, f"no platform pid in {path} ({getattr(exc, 'strerror', None) or exc})"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None, f"the platform's pid file {path} names no running process ({pid})"
    except PermissionError:
        pass  # alive, another user's: the signal below says whether we may
    return pid, ""


def rotate_source(conn: psycopg.Connection, source: LogSource, *, act: bool = True,
                  why_not: str = "") -> list[dict[str, Any]]:
    """Plan and (``act``) carry out the rotation of one source; its actions."""
    t0 = time.monotonic()
    active_path = Path(str(source.active_file))
    active = log_file(active_path)
    numbered = rotated_files(active_path)
    rotated = [f for _, p in numbered if (f := log_file(p)) is not None]
    planned = {f.path: f for f in rotated}
    steps = rotation_plan(active, rotated, store.load_offsets(conn, source.name),
                          max_bytes=int(source.rotate_bytes or 0), keep=source.rotate_keep)
    out = []
    # deletions first: the rotation below renames the files they name
    for step in sorted(steps, key=lambda s: s.action != "delete"):
        if step.action == "wait":
            out.append(_action("rotate" if step.path == str(active_path) else "delete", step.path, "skipped",
                               step.reason, t0))
        elif not act:
            out.append(_action(step.action, step.path, "skipped", f"{why_not or 'dry run'}: {step.reason}", t0))
        elif step.action == "delete":
            now = log_file(Path(step.path))
            if now is None or now.file_id != planned[step.path].file_id:
                out.append(_action("delete", step.path, "skipped", "changed since planned: left for the next run", t0))
                continue
            os.unlink(step.path)
            out.append(_action("delete", step.path, "done", step.reason, t0))
        else:
            out.append(_rotate(source, active_path, numbered, step.reason, t0))
    return out


def _rotate(source: LogSource, active_path: Path, numbered: list[tuple[int, Path]], reason: str,
            t0: float) -> dict[str, Any]:
    pid, why = _platform_pid(source)
    if pid is None:
        return _action("rotate", str(active_path), "skipped", f"{why}: not rotated (nothing would reopen it)", t0)
    before = log_file(active_path)
    for n, path in sorted((n, p) for n, p in numbered if p.exists())[::-1]:  # highest first: nothing overwritten
        os.rename(path, path.with_name(f"{active_path.name}.{n + 1}"))
    os.rename(active_path, active_path.with_name(active_path.name + ".1"))
    try:
        os.kill(pid, getattr(signal, "SIG" + source.reopen_signal))
    except OSError as exc:
        return _action("rotate", str(active_path), "failed",
                       f"renamed to {active_path.name}.1, but the platform (pid {pid}) could not be signalled: "
                       f"{exc.strerror}; it writes on into {active_path.name}.1 (collected: nothing lost)", t0)
    deadline = time.monotonic() + REOPEN_WAIT_SECONDS
    while (now := log_file(active_path)) is None or (before is not None and now.file_id == before.file_id):
        if time.monotonic() > deadline:
            return _action("rotate", str(active_path), "failed",
                           f"renamed to {active_path.name}.1 and SIG{source.reopen_signal} sent to pid {pid}, but no "
                           f"new file within {REOPEN_WAIT_SECONDS:g} s: the platform writes on into "
                           f"{active_path.name}.1 (collected: nothing lost)", t0)
        time.sleep(0.05)
    return _action("rotate", str(active_path), "done",
                   f"{reason}; renamed to {active_path.name}.1, the platform (pid {pid}) reopened it", t0)


def rotate_configured(settings, conn: psycopg.Connection, *, act: bool = True,
                      why_not: str = "") -> list[dict[str, Any]]:
    """Every source with ``rotate_bytes``: its actions (a source that fails is one failed action;
    the others go on)."""
    out: list[dict[str, Any]] = []
    for source in settings.log_sources:
        if source.rotate_bytes is None:
            continue
        try:
            out += rotate_source(conn, source, act=act, why_not=why_not)
        except OSError as exc:
            out.append({"action": "rotate", "object": str(source.active_file), "status": "failed", "seconds": 0.0,
                        "detail": f"{type(exc).__name__}: {exc.strerror or exc}"})
    return out
