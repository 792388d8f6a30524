"""Disk space, the weekly maintenance stage: the configured mounts checked, and bvh-ops' own
leftovers removed once their owner is gone.

Mounts (``disk_paths``) are judged with the monitor's thresholds (``disk_warning_percent`` /
``disk_critical_percent``): a finding each past them.

Leftovers, where bvh-ops creates them and who owns them:

- ``drill_scratch``: ``<state_dir>/drills/<drill-id>[-physical]`` (a drill's scratch cluster or
  restored data directory; the restore's ``bvh_ops_recovery`` directory and its WAL prefetch
  spool inside it go with it). Owner: the drill process named in ``owner.json`` (the labels of
  bvh_ops.orphans: host, PID namespace, pid and its start time, so a reused pid is not taken
  for the owner). A directory without ``owner.json`` (written before it existed) has no known
  owner unless its server still runs: it is reported, never removed. A scratch server still
  running for a dead drill is stopped (SIGQUIT: immediate shutdown) before the directory goes.
- ``recovery_dir``: ``<data>/bvh_ops_recovery`` of a physical restore (restore_command config,
  an identity copy, S3 credentials, the prefetch spool) under the ``leftover_paths`` roots:
  normally removed by recovery_end_command; left behind when the recovery never ended. Owner:
  the data directory's postmaster. The identity copy is overwritten before unlinking.
- ``temp_dir`` / ``temp_file``: ``bvh-incr-<pid>-*`` (an incremental backup's manifest scratch)
  and ``bvh-toc-<pid>-*.list`` (a restore's TOC list) in the temporary directory. Owner: that
  pid; a reused pid looks alive and keeps the file (the safe direction). Names without a pid
  (older versions) have no known owner: reported, never removed.

- ``repository_upload``: an upload to the repository never committed nor aborted (a crash,
  kill -9 or power loss in the middle of writing an object): a hidden ``.tmp-<object>.<8 hex>``
  file on ``file://`` (another program's ``.tmp-`` file is not ours), a multipart upload on S3 (whose parts S3 keeps, and bills, until aborted). Owner:
  its writer, which may still run while the upload is younger than UPLOAD_LIFETIME (the longest
  task's time limit), counted from its last write (the file's mtime; the newest part on S3).

``decide`` is pure: a leftover is removed only when its owner is certainly gone AND it is older
than ``leftover_grace_hours`` (nothing touched for that long), otherwise kept with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bvh_ops.errors import BvhOpsError
from bvh_ops.orphans import LABEL_HOST, LABEL_PIDNS, _pid_namespace, owner_gone, owner_labels
from bvh_ops.storage.base import Upload, uploads

OWNER_FILE = "owner.json"
UPLOAD_LIFETIME = 24 * 3600  # no task writes longer (the longest task time limit): its upload is dead after
RECOVERY_DIR = "bvh_ops_recovery"
_TEMP = re.compile(r"^bvh-(?:incr|toc)-(?:(?P<pid>\d+)-)?")


@dataclass(frozen=True)
class Leftover:
    path: str
    kind: str                   # drill_scratch | recovery_dir | temp_dir | temp_file | repository_upload
    owner: str                  # who owns it, for the report
    owner_alive: bool | None    # None: nobody can tell (no owner recorded, another host)
    age_seconds: float          # since anything in it last changed
    bytes: int
    server_pid: int | None = None   # a scratch server still running in it
    upload: Upload | None = None    # a repository upload (kind repository_upload)


@dataclass(frozen=True)
class Decision:
    leftover: Leftover
    remove: bool
    reason: str


def decide(leftovers: list[Leftover], grace_seconds: float) -> list[Decision]:
    """Remove only what is certainly orphaned (owner gone) and untouched for the grace."""
    out = []
    for lo in leftovers:
        hours = lo.age_seconds / 3600
        if lo.owner_alive is None:
            out.append(Decision(lo, False, f"owner unknown ({lo.owner}): left for an operator"))
        elif lo.owner_alive:
            out.append(Decision(lo, False, f"in use: {lo.owner}" + ("" if lo.kind == "repository_upload" else
                                                                   " is running")))
        elif lo.age_seconds < grace_seconds:
            out.append(Decision(lo, False, f"{lo.owner} is gone, but it changed {hours:.1f} h ago "
                                           f"(grace {grace_seconds / 3600:g} h)"))
        else:
            out.append(Decision(lo, True, f"{lo.owner} is gone and nothing changed for {hours:.1f} h"))
    return out


# -- what is there (reads the file system and the process table) ---------------------------


def write_owner(root: Path) -> None:
    """Record this process as the owner of ``root`` (a drill's scratch directory)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / OWNER_FILE).write_text(json.dumps(owner_labels()))


def _tree(path: Path, depth: int = 3) -> tuple[float, int]:
    """(newest mtime, bytes) of ``path`` and what is under it (mtime to ``depth`` levels)."""
    newest, total = 0.0, 0
    base = len(path.parts)
    try:
        newest = path.lstat().st_mtime
        if not path.is_dir() or path.is_symlink():
            return newest, path.lstat().st_size
    except OSError:
        return newest, total
    for dirpath, dirnames, filenames in os.walk(path, onerror=lambda e: None):
        level = len(Path(dirpath).parts) - base
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if name in filenames:
                total += st.st_size
            if level < depth:
                newest = max(newest, st.st_mtime)
    return newest, total


def _postmaster(data: Path) -> int | None:
    """The pid of the server running in ``data``, or None."""
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else pid
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return pid


def _drill(root: Path, now: float) -> Leftover:
    newest, size = _tree(root)
    server = _postmaster(root / "data")
    try:
        labels = json.loads((root / OWNER_FILE).read_text())
    except (OSError, ValueError):
        labels = None
    if isinstance(labels, dict):
        pid = labels.get("bvh-ops.pid", "?")
        if labels.get(LABEL_HOST) != socket.gethostname() or labels.get(LABEL_PIDNS, "") != _pid_namespace():
            owner, alive = f"drill process pid {pid} on {labels.get(LABEL_HOST)}", None
        else:
            owner, alive = f"drill process pid {pid}", not owner_gone(labels)
    elif server is not None:
        owner, alive = f"scratch server pid {server} (no {OWNER_FILE})", True
    else:
        owner, alive = f"no {OWNER_FILE}", None
    return Leftover(str(root), "drill_scratch", owner, alive, now - newest, size, server)


def _recovery(rdir: Path, now: float) -> Leftover:
    newest, size = _tree(rdir)
    server = _postmaster(rdir.parent)
    owner = f"the server of {rdir.parent}" + (f" (pid {server})" if server else "")
    return Leftover(str(rdir), "recovery_dir", owner, server is not None, now - newest, size)


def _temp(path: Path, now: float) -> Leftover | None:
    m = _TEMP.match(path.name)
    if m is None or path.is_symlink():
        return None
    kind = "temp_dir" if path.is_dir() else "temp_file"
    newest, size = _tree(path)
    if m.group("pid") is None:
        return Leftover(str(path), kind, "no pid in the name", None, now - newest, size)
    pid = int(m.group("pid"))
    return Leftover(str(path), kind, f"process pid {pid}", psutil.pid_exists(pid), now - newest, size)


def scan(state_dir: Path, roots: list[Path], temp_dir: Path | None = None, *, now: float | None = None
         ) -> list[Leftover]:
    """Every bvh-ops leftover candidate with its owner's state (see the module docstring)."""
    now = time.time() if now is None else now
    out: list[Leftover] = []
    drills = Path(state_dir) / "drills"
    if drills.is_dir():
        out += [_drill(d, now) for d in sorted(drills.iterdir()) if d.is_dir() and not d.is_symlink()]
    for root in roots:
        for rdir in sorted({*Path(root).glob(RECOVERY_DIR), *Path(root).glob(f"*/{RECOVERY_DIR}"),
                            *Path(root).glob(f"*/*/{RECOVERY_DIR}")}):
            if rdir.is_dir() and not rdir.is_symlink() and drills not in rdir.parents:
                out.append(_recovery(rdir, now))
    tmp = Path(temp_dir or tempfile.gettempdir())
    try:
        entries = sorted(tmp.iterdir())
    except OSError:
        entries = []
    out += [lo for p in entries if p.name.startswith("bvh-") and (lo := _temp(p, now)) is not None]
    return out


def scan_uploads(store, now: float) -> tuple[list[Leftover], str | None]:
    """The repository's uploads never committed nor aborted (``repository_upload``), and why
    part of the repository could not be looked at (None: all of it was)."""
    out = []
    try:
        for u in uploads(store):
            age = max(0.0, now - u.since.timestamp())
            alive = age < UPLOAD_LIFETIME
            owner = (f"its writer may still run (last write {age / 3600:.1f} h ago; a task runs up to "
                     f"{UPLOAD_LIFETIME // 3600} h)" if alive else f"its writer (no task runs {UPLOAD_LIFETIME // 3600} h)")
            out.append(Leftover(f"{store.url}/{u.key} (upload {u.handle})", "repository_upload", owner, alive, age,
                                u.bytes, upload=u))
    except BvhOpsError as exc:
        return out, str(exc)
    return out, None


def remove(lo: Leftover) -> None:
    """Remove one leftover (decided orphaned): a dead drill's server stopped first, a recovery
    directory's identity copy overwritten first."""
    path = Path(lo.path)
    if lo.kind == "drill_scratch" and lo.server_pid:
        _stop(lo.server_pid)
    if lo.kind in ("drill_scratch", "recovery_dir"):
        for rdir in [path] if lo.kind == "recovery_dir" else path.glob(f"*/{RECOVERY_DIR}"):
            remove_recovery_dir(rdir)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _stop(pid: int, wait: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)


def remove_recovery_dir(rdir: Path) -> None:
    """A restore's recovery directory: its prefetcher ended, the identity copy overwritten, gone
    (the same removal as the restore's own recovery_end_command)."""
    from bvh_ops.walcmd import remove_recovery_dir as remove

    remove(rdir)


# -- the stage -------------------------------------------------------------------------------


def check_mounts(paths: list[Path], warning: float, critical: float) -> tuple[list[dict[str, Any]], list[dict]]:
    """(rows {path, percent, free_bytes, total_bytes}, findings past the thresholds)."""
    rows, findings = [], []
    for p in paths:
        try:
            u = psutil.disk_usage(str(p))
        except OSError as exc:
            findings.append({"kind": "disk_space", "object": str(p), "severity": "warning",
                             "detail": f"cannot read {p}: {exc.strerror or exc}"})
            continue
        rows.append({"path": str(p), "percent": round(u.percent, 1), "free_bytes": u.free, "total_bytes": u.total})
        sev = "critical" if u.percent >= critical else "warning" if u.percent >= warning else None
        if sev:
            findings.append({"kind": "disk_space", "object": str(p), "severity": sev,
                             "detail": f"{u.percent:.1f} % used ({u.free // 2**20} MiB free of "
                                       f"{u.total // 2**20} MiB; {sev} at {critical if sev == 'critical' else warning:g} %)"})
    return rows, findings


def disk_stage(settings, *, act: bool, why_not: str = "", now: float | None = None,
               temp_dir: Path | None = None) -> tuple[list[dict[str, Any]], list[dict], dict[str, Any]]:
    """Mounts checked; leftovers decided and (``act``) removed. (actions, findings, section)."""
    cfg = settings.maintenance
    rows, findings = check_mounts(list(settings.disk_paths), settings.disk_warning_percent,
                                  settings.disk_critical_percent)
    now = time.time() if now is None else now
    found = scan(Path(settings.state_dir), list(cfg.leftover_paths), temp_dir, now=now)
    stores = {}  # leftover path -> the store its upload is in
    # The replica too: `bvh-ops replicate` writes into it as the backups do into the primary.
    for url, of in ((settings.repository, lambda: settings),
                    (settings.replica_repository, lambda: settings.for_replica())):
        if not url:
            continue
        try:
            from bvh_ops.storage import open_store

            store = open_store(of())
            listed, problem = scan_uploads(store, now)
            found += listed
            stores.update((lo.path, store) for lo in listed)
        except BvhOpsError as exc:
            problem = str(exc)
        if problem:  # never reported as clean: a finding says what was not looked at
            findings.append({"kind": "repository_uploads", "object": str(url), "severity": "warning",
                             "detail": f"interrupted uploads not looked for: {problem}"})
    decisions = decide(found, cfg.leftover_grace_hours * 3600)
    actions = []
    for d in decisions:
        lo = d.leftover
        a = {"action": "cleanup", "object": lo.path, "status": "skipped", "detail": f"{lo.kind}: {d.reason}",
             "seconds": 0.0, "before": {"bytes": lo.bytes}, "after": None, "sql": None}
        if d.remove and not act:
            a["detail"] = f"{lo.kind}: {d.reason}; not removed: {why_not}"
        elif d.remove:
            t0 = time.monotonic()
            try:
                if lo.upload is not None:
                    stores[lo.path].discard_upload(lo.upload)
                else:
                    remove(lo)
                a.update(status="done", after={"bytes": 0})
            except (OSError, BvhOpsError) as exc:
                a.update(status="failed", detail=f"{lo.kind}: {d.reason}; removing failed: {exc}")
            a["seconds"] = round(time.monotonic() - t0, 3)
        actions.append(a)
    freed = sum(a["before"]["bytes"] for a in actions if a["status"] == "done")
    return actions, findings, {"mounts": rows, "freed_bytes": freed,
                               "leftovers": [{"path": d.leftover.path, "kind": d.leftover.kind,
                                              "remove": d.remove, "reason": d.reason} for d in decisions]}

