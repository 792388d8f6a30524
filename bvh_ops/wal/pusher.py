"""The WAL pusher: archive_command's work done ahead by one process per ``pg_wal`` directory.

PostgreSQL runs archive_command once per WAL file, one after another. As with pgBackRest's
``archive-async``, `bvh-ops-wal push` does not archive the file itself when PostgreSQL has
marked it ready (``archive_status/<name>.ready``): it makes sure a pusher is running for that
``pg_wal`` and waits for the pusher's verdict on its file in the spool. The pusher archives every
ready file in PostgreSQL's order (``.history`` first, then by name) — uploads on WORKERS threads
(zstd, AES-GCM and hashlib release the GIL), index entries (the commit points) strictly in that
order — and writes, only after a file's index entry is durable, ``<name>.ok`` holding the
sha256 of the bytes it stored. The command then hashes the file PostgreSQL handed over and
reports success only when it is the same; any other outcome is a failure PostgreSQL retries.
A file the pusher cannot archive gets ``<name>.error`` (exit code, message) and the pusher stops
(nothing after a failed file is committed: no gap); the next call reports it and starts a new
pusher, which tries again. The pusher exits after IDLE_EXIT seconds without ready files.

Spool: ``<state_dir>/archive-spool/<id>/``, ``id`` naming the ``pg_wal`` directory and the
configuration (file and BVH_OPS_*/AWS_* variables), so a changed configuration gets a new pusher.
This module imports only the standard library at the top: the command's fast path uses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from pathlib import Path

SPOOL = "archive-spool"
LOCK = "pusher.lock"
IDENT = "pusher.ident"  # the running pusher's configuration
STOP = "stop"  # a request that the pusher with the configuration written in it stops
OK = ".ok"
ERROR = ".error"
WORKERS = 2  # uploads in parallel (pgBackRest's process-max 2 is the comparison)
WINDOW = 4  # files read and uploading at once: bounds memory (a segment is read whole)
IDLE_EXIT = 10.0  # seconds without a ready file before the pusher exits
POLL = 0.05
_ENV = re.compile(r"^(BVH_OPS_|AWS_(PROFILE|CONFIG_FILE|SHARED_CREDENTIALS_FILE|ENDPOINT_URL|REGION|DEFAULT_REGION)$)")
_SECRET = re.compile(r"PASSWORD|SECRET|TOKEN")
_WAL_FILE = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")  # = pg.lsn.WAL_FILE


def spool_dir(spool: Path, wal_dir: str) -> Path:
    """The spool of the one pusher that may archive from ``wal_dir``."""
    return spool / hashlib.sha256(os.path.realpath(wal_dir).encode()).hexdigest()[:16]


def config_ident() -> str:
    """This process's configuration as far as archiving goes: the config file (path, mtime,
    size) and the BVH_OPS_*/AWS_* variables (values of secret ones left out). A verdict counts
    only for a caller with the same; a pusher with another is asked to stop."""
    cfg = os.environ.get("BVH_OPS_CONFIG", "")
    try:
        st = os.stat(cfg) if cfg else None
    except OSError:
        st = None
    env = sorted((k, "" if _SECRET.search(k) else v) for k, v in os.environ.items() if _ENV.match(k))
    return hashlib.sha256(json.dumps([cfg, st and [st.st_mtime_ns, st.st_size], env]).encode()).hexdigest()[:16]


def ready_names(wal_dir: str) -> list[str]:
    """WAL files PostgreSQL has marked ready, in the order its archiver takes them."""
    names = [e.name[: -len(".ready")] for e in os.scandir(os.path.join(wal_dir, "archive_status"))
             if e.name.endswith(".ready")]
    return sorted((n for n in names if _WAL_FILE.match(n)), key=lambda n: (not n.endswith(".history"), n))


def running(d: Path) -> str | None:
    """The configuration of the pusher holding this spool's lock (None: no pusher)."""
    try:
        fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return (d / IDENT).read_text().strip()
        except OSError:
            return ""
    finally:
        os.close(fd)  # releases the lock if we took it
    return None


def verdict(d: Path, name: str, ident: str) -> tuple[str, str] | None:
    """The pusher's verdict on ``name`` for configuration ``ident``: ("ok", sha256 stored) or
    ("error", "<exit code>\n<message>"); None: none yet."""
    for kind in (OK, ERROR):
        try:
            head, _, rest = (d / f"{name}{kind}").read_text().partition("\n")
        except OSError:
            continue
        value, _, who = head.partition(" ")
        if who == ident:
            return (kind[1:], value if kind == OK else f"{value}\n{rest.strip()}")
    return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _error(d: Path, name: str, ident: str, exc: BaseException) -> None:
    code = getattr(exc, "exit_code", None) or 1
    text = str(exc) if getattr(exc, "exit_code", None) else f"{type(exc).__name__}: {exc}"
    try:
        _write(d / f"{name}{ERROR}", f"{code} {ident}\n{text}\n")
    except OSError:
        pass


def _tidy(d: Path, ready: set[str]) -> None:
    """Verdicts on files that are no longer ready (PostgreSQL has them as done) are stale."""
    for e in os.scandir(d):
        for suffix in (OK, ERROR):
            if e.name.endswith(suffix) and e.name[: -len(suffix)] not in ready:
                Path(e.path).unlink(missing_ok=True)


def run(d: Path, wal_dir: str, first: str) -> int:
    """The pusher's life: hold the spool's lock (one pusher per ``pg_wal``, whatever its
    configuration: two writers of one WAL file could pair one's index entry with the other's
    object), archive ready files until idle or asked to stop, then exit."""
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return 0  # another pusher serves this pg_wal
    try:
        ident = config_ident()
        _write(d / IDENT, ident + "\n")
        if not _stopped(d, ident):
            (d / STOP).unlink(missing_ok=True)  # meant for a pusher that has exited
        return _serve(d, wal_dir, first, ident)
    finally:
        os.close(fd)


def _stopped(d: Path, ident: str) -> bool:
    try:
        return (d / STOP).read_text().strip() == ident
    except OSError:
        return False


def _serve(d: Path, wal_dir: str, first: str, ident: str) -> int:
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from bvh_ops.config import load_settings
    from bvh_ops.keys import load_recipients
    from bvh_ops.storage import open_store
    from bvh_ops.wal.fence import FENCE_RECHECK_SECONDS, FenceView
    from bvh_ops.wal.store import wal_commit, wal_upload

    try:
        settings = load_settings()
        store = open_store(settings)
        recipients = load_recipients(settings.require_recipients())
    except Exception as exc:  # noqa: BLE001 - the waiting command reports it to PostgreSQL's log
        _error(d, first, ident, exc)
        return 1
    fences: list = [None, 0.0]  # FenceView, when listed

    def fence_view() -> FenceView:
        # One listing of fence/ serves the files checked within FENCE_RECHECK_SECONDS of it.
        if fences[0] is None or time.monotonic() - fences[1] > FENCE_RECHECK_SECONDS:
            fences[:] = [FenceView(store), time.monotonic()]
        return fences[0]

    def upload(name: str) -> dict | None:
        return wal_upload(settings, os.path.join(wal_dir, name), store=store, recipients=recipients,
                          fences=fence_view())

    def has_verdict(name: str) -> bool:
        found = verdict(d, name, ident)
        return found is not None and found[0] == "ok"

    pending: deque = deque()  # (name, future) in commit order
    idle_since = time.monotonic()
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bvh-wal-push") as pool:
        try:
            while not _stopped(d, ident):
                if len(pending) < WINDOW:
                    try:
                        ready = ready_names(wal_dir)
                    except OSError:
                        return 0  # the cluster is gone
                    queued = {n for n, _ in pending}
                    for name in ready:
                        if len(pending) >= WINDOW:
                            break
                        if name not in queued and not has_verdict(name):
                            pending.append((name, pool.submit(upload, name)))
                    if not pending:
                        _tidy(d, set(ready))
                        if time.monotonic() - idle_since > IDLE_EXIT:
                            return 0
                        time.sleep(POLL)
                        continue
                name, future = pending.popleft()
                try:
                    entry = future.result()
                    if entry is not None:
                        wal_commit(settings, entry, store=store)
                        sha = entry["plaintext_sha256"]
                    else:  # already archived, the same bytes
                        sha = hashlib.sha256(Path(wal_dir, name).read_bytes()).hexdigest()
                    # Only now, with the index entry durable: the verdict the command reports.
                    _write(d / f"{name}{OK}", f"{sha} {ident}\n")
                    (d / f"{name}{ERROR}").unlink(missing_ok=True)
                except Exception as exc:  # noqa: BLE001 - reported by the command waiting for it
                    _error(d, name, ident, exc)
                    return 1  # nothing after a failed file may be committed: stop, a new pusher retries
                idle_since = time.monotonic()
            return 0
        finally:
            for _, f in pending:
                f.cancel()
