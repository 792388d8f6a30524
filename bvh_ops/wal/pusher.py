"""The WAL pusher: archive_command's work done ahead by one process per ``pg_wal`` directory.

PostgreSQL runs archive_command once per WAL file, one after another. As with pgBackRest's
``archive-async``, `bvh-ops-wal push` does not archive a file PostgreSQL has marked ready
(``archive_status/<name>.ready``) itself: it makes sure a pusher runs for that ``pg_wal`` and
waits for the pusher's verdict on its file in the spool. The pusher archives every ready file in
PostgreSQL's order (``.history`` first, then by name) — uploads on WORKERS threads (zstd,
AES-GCM and hashlib release the GIL), index entries (the commit points) strictly in that order —
and only once a file's index entry is durable writes ``<name>.ok``: the digest of the bytes it
stored, as its index entry records it (``verdict_value``: sha256, or BLAKE3 with ``wal_digest =
blake3``). The command hashes the file PostgreSQL handed over the same way and reports success
only when it is the same; anything else is a failure PostgreSQL retries. A file the pusher cannot archive gets
``<name>.error`` (exit code, message) and the pusher stops, so nothing after it is committed
(no gap); the command reports the error and the next call starts a new pusher, which tries
again.

An idle pusher sleeps on a FIFO in its spool (``wake``): a call whose verdict is not there yet
writes a byte to it, so a new ready file is taken at once and an idle pusher costs no CPU
between files (it looks around every IDLE_CHECK seconds for a stop request, a changed
configuration or a cluster that is gone). It exits after a while without ready files: at least
IDLE_EXIT seconds, longer when files come further apart — twice the longest gap between files
it saw (at its start: the time since the previous pusher's last file, ``pusher.last``), up to
IDLE_MAX. At a low WAL rate (a segment per ``archive_timeout``) one pusher then serves every
segment instead of one started per segment (its start-up costs several segments' worth of CPU).
A pusher started while its server ran (``postmaster.pid`` beside ``pg_wal``) leaves as soon as it
is idle once the server has stopped: it does not outstay the cluster.

One pusher per ``pg_wal``, whatever its configuration: it holds an flock on the directory (two
writers of one WAL file would upload it twice: safe, as an upload never replaces an object and
the first index entry names its own, but wasted work and an orphaned object). Verdicts carry
the configuration they were made under (config_ident: the config file and the BVH_OPS_*/AWS_*
variables); a call with another configuration ignores them and asks that pusher to stop, and a
pusher whose config file changes stops by itself.

Spool: ``<state_dir>/archive-spool/<id of the pg_wal directory>/``. The command's side of this
module (spool_dir, config_ident, verdict, running, request_stop, wake) imports only os, fcntl and
hashlib: archive_command runs once per WAL file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time

IDENT = "pusher.ident"  # the running pusher's configuration
STOP = "stop"  # a request that the pusher whose configuration is written in it stops
OK = ".ok"
ERROR = ".error"
WORKERS = 2  # uploads in parallel (pgBackRest's process-max 2 is the comparison)
WINDOW = 4  # files being read and uploaded at once: bounds memory (a segment is read whole)
WAKE = "wake"  # the FIFO a call wakes the idle pusher through
LAST = "pusher.last"  # when the last pusher archived its last file (wall clock): the gap a new one expects
IDLE_EXIT = 10.0  # seconds without a ready file before the pusher exits, at least...
IDLE_MAX = 600.0  # ...and at most (in between: twice the longest gap between files it saw)
IDLE_CHECK = 2.0  # seconds an idle pusher sleeps when nobody wakes it
POLL = 0.05  # ...and where there is no FIFO to wake it through
_ENV = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL", "AWS_REGION",
        "AWS_DEFAULT_REGION")
_SECRET = ("PASSWORD", "SECRET", "TOKEN")


def spool_dir(spool: str, wal_dir: str) -> str:
    """The spool of the one pusher that archives from ``wal_dir``."""
    return os.path.join(spool, hashlib.sha256(os.path.realpath(wal_dir).encode()).hexdigest()[:16])


def config_ident() -> str:
    """This process's configuration as far as archiving goes: the config file (path, mtime,
    size) and the BVH_OPS_* and AWS location variables (the values of secret ones left out)."""
    cfg = os.environ.get("BVH_OPS_CONFIG", "")
    try:
        st = os.stat(cfg) if cfg else None
    except OSError:
        st = None
    env = sorted((k, "" if any(w in k for w in _SECRET) else v) for k, v in os.environ.items()
                 if k.startswith("BVH_OPS_") or k in _ENV)
    text = repr([cfg, st and (st.st_mtime_ns, st.st_size, st.st_ino), env])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def verdict_value(alg: str, digest: str) -> str:
    """An ok verdict's digest: the hex alone for sha256 (as every pusher wrote it before
    ``wal_digest``), "<alg>:<hex>" otherwise."""
    return digest if alg == "sha256" else f"{alg}:{digest}"


def verdict_digest(value: str) -> tuple[str, str]:
    """(algorithm, hex) of an ok verdict's ``verdict_value``."""
    alg, _, digest = value.rpartition(":")
    return alg or "sha256", digest


def verdict(d: str, name: str, ident: str) -> tuple[str, str] | None:
    """The pusher's verdict on ``name`` under configuration ``ident``: ("ok", ``verdict_value``
    of what it stored) or ("error", "<exit code>\\n<message>"); None: none yet."""
    for kind in (OK, ERROR):
        text = _read(os.path.join(d, name + kind))
        if text is None:
            continue
        head, _, rest = text.partition("\n")
        value, _, who = head.partition(" ")
        if who == ident:
            return (kind[1:], value if kind == OK else f"{value}\n{rest.strip()}")
    return None


def _lock(wal_dir: str) -> int | None:
    """``wal_dir`` locked (an flock on its descriptor: nothing is written into the data
    directory), or None when a pusher holds it."""
    fd = os.open(wal_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def running(d: str, wal_dir: str) -> str | None:
    """The configuration of the pusher archiving from ``wal_dir`` (None: no pusher; "": one whose
    configuration this spool does not know: another spool's, or one starting)."""
    try:
        fd = _lock(wal_dir)
    except OSError:
        return None
    if fd is not None:
        os.close(fd)
        return None
    return (_read(os.path.join(d, IDENT)) or "").strip()


def request_stop(d: str, ident: str) -> None:
    """Ask the pusher running under configuration ``ident`` to stop (after the file in hand)."""
    _write(os.path.join(d, STOP), ident + "\n")
    wake(d)


def wake(d: str) -> None:
    """Wake the idle pusher of spool ``d``, if one is listening (nothing happens otherwise: the
    FIFO cannot be opened for writing without a reader, and a full FIFO is awake already)."""
    try:
        fd = os.open(os.path.join(d, WAKE), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return  # no pusher listening (ENXIO), or no FIFO yet
    try:
        os.write(fd, b"\0")
    except OSError:
        pass  # EAGAIN: bytes are waiting already
    finally:
        os.close(fd)


def _listen(d: str) -> int | None:
    """The read end of spool ``d``'s FIFO (created if missing; None where the file system has no
    FIFOs: the pusher then looks for ready files every POLL seconds). Opened read-write, so it
    never reports end-of-file between writers (Linux: a FIFO opened O_RDWR does not block)."""
    import stat

    path = os.path.join(d, WAKE)
    try:
        try:
            os.mkfifo(path, 0o600)
        except FileExistsError:
            if not stat.S_ISFIFO(os.lstat(path).st_mode):  # always "readable": a busy loop
                os.unlink(path)
                os.mkfifo(path, 0o600)
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd
    except OSError:
        return None


def _sleep(fd: int | None, seconds: float) -> None:
    """Until a call wakes the pusher (a byte in the FIFO) or ``seconds`` pass."""
    import select

    if fd is None:
        time.sleep(min(seconds, POLL))
    elif select.select([fd], [], [], seconds)[0]:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass


def idle_limit(gap: float | None) -> float:
    """How long a pusher waits for the next ready file, given a gap between files it knows of
    (None: none): twice that gap, within [IDLE_EXIT, IDLE_MAX]."""
    return min(IDLE_MAX, max(IDLE_EXIT, 2 * gap)) if gap is not None else IDLE_EXIT


def _last_gap(d: str) -> float | None:
    """Seconds since the previous pusher archived its last file (None: unknown, or longer than
    IDLE_MAX — a pause, not a rate worth waiting for)."""
    try:
        gap = time.time() - float(_read(os.path.join(d, LAST)) or "")
    except ValueError:
        return None
    return gap if 0 <= gap <= IDLE_MAX else None


def _write(path: str, text: str) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _error(d: str, name: str, ident: str, exc: BaseException) -> None:
    code = getattr(exc, "exit_code", None) or 1
    text = str(exc) if getattr(exc, "exit_code", None) else f"{type(exc).__name__}: {exc}"
    try:
        _write(os.path.join(d, name + ERROR), f"{code} {ident}\n{text}\n")
    except OSError:
        pass


def ready_names(wal_dir: str) -> list[str]:
    """WAL files PostgreSQL has marked ready, in the order its archiver takes them."""
    from bvh_ops.pg.lsn import WAL_FILE

    names = [e.name[: -len(".ready")] for e in os.scandir(os.path.join(wal_dir, "archive_status"))
             if e.name.endswith(".ready")]
    return sorted((n for n in names if WAL_FILE.match(n)), key=lambda n: (not n.endswith(".history"), n))


def _tidy(d: str, ready: set[str]) -> None:
    """Verdicts on files that are no longer ready (PostgreSQL has them as done) are stale."""
    for e in os.scandir(d):
        for suffix in (OK, ERROR):
            if e.name.endswith(suffix) and e.name[: -len(suffix)] not in ready:
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass


def _stopped(d: str, ident: str) -> bool:
    return (_read(os.path.join(d, STOP)) or "").strip() == ident


def run(d: str, wal_dir: str, first: str) -> int:
    """The pusher's life: hold the pg_wal's lock, archive ready files until idle, asked to stop
    or configured otherwise, then exit. ``first`` is the file of the call that started it (where
    a failure to start is reported)."""
    os.makedirs(d, exist_ok=True)
    fd = _lock(wal_dir)
    if fd is None:
        return 0  # another pusher serves this pg_wal
    ident = config_ident()
    try:
        _write(os.path.join(d, IDENT), ident + "\n")
        if not _stopped(d, ident):
            try:
                os.unlink(os.path.join(d, STOP))  # meant for a pusher that has exited
            except FileNotFoundError:
                pass
        return _serve(d, wal_dir, first, ident)
    finally:
        try:
            os.unlink(os.path.join(d, IDENT))
        except FileNotFoundError:
            pass
        os.close(fd)


def _serve(d: str, wal_dir: str, first: str, ident: str) -> int:
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from bvh_ops.config import load_settings
    from bvh_ops.keys import load_recipients
    from bvh_ops.storage import open_store
    from bvh_ops.wal.fence import FENCE_RECHECK_SECONDS, FenceView
    from bvh_ops.wal.store import entry_digest, file_digest, wal_commit, wal_upload

    try:
        settings = load_settings()
        store = open_store(settings)
        recipients = load_recipients(settings.require_recipients())
    except Exception as exc:  # noqa: BLE001 - the waiting command reports it to PostgreSQL's log
        _error(d, first, ident, exc)
        return 1
    fences: list = [None, 0.0]  # a FenceView and when it was listed

    def fence_view() -> FenceView:
        # One listing of fence/ serves the files checked within FENCE_RECHECK_SECONDS of it.
        if fences[0] is None or time.monotonic() - fences[1] > FENCE_RECHECK_SECONDS:
            fences[:] = [FenceView(store), time.monotonic()]
        return fences[0]

    def upload(name: str) -> dict | None:
        return wal_upload(settings, os.path.join(wal_dir, name), store=store, recipients=recipients,
                          fences=fence_view())

    def judged(name: str) -> bool:
        found = verdict(d, name, ident)
        return found is not None and found[0] == "ok"

    pending: deque = deque()  # (name, future) in commit order
    idle_since = time.monotonic()
    limit = idle_limit(_last_gap(d))
    last_file = None  # wall-clock time of the last file archived
    slept = False  # idle since the last file
    server = os.path.join(os.path.dirname(wal_dir), "postmaster.pid")  # while PostgreSQL runs
    served = os.path.exists(server)
    listen = _listen(d)
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="bvh-wal-push") as pool:
        try:
            while not _stopped(d, ident) and config_ident() == ident:
                if len(pending) < WINDOW:
                    try:
                        ready = ready_names(wal_dir)
                    except OSError:
                        return 0  # the cluster is gone
                    queued = {n for n, _ in pending}
                    for name in ready:
                        if len(pending) >= WINDOW:
                            break
                        if name not in queued and not judged(name):
                            pending.append((name, pool.submit(upload, name)))
                    if not pending:
                        _tidy(d, set(ready))
                        idle = time.monotonic() - idle_since
                        if idle >= limit or not os.path.isdir(d) or (served and not os.path.exists(server)):
                            return 0  # idle long enough, its spool removed, or its server stopped
                        _sleep(listen, min(IDLE_CHECK, limit - idle))
                        slept = True
                        continue
                    if slept:  # files come this far apart: wait as long for the next one
                        limit, slept = max(limit, idle_limit(time.monotonic() - idle_since)), False
                name, future = pending.popleft()
                try:
                    entry = future.result()
                    if entry is not None:
                        wal_commit(settings, entry, store=store)
                        alg, digest = entry_digest(entry)
                    else:  # already archived, the same bytes
                        alg = settings.wal_digest
                        digest = file_digest(os.path.join(wal_dir, name), alg)
                    # Only now, with the index entry durable: the verdict the command reports.
                    _write(os.path.join(d, name + OK), f"{verdict_value(alg, digest)} {ident}\n")
                    try:
                        os.unlink(os.path.join(d, name + ERROR))
                    except FileNotFoundError:
                        pass
                except Exception as exc:  # noqa: BLE001 - reported by the command waiting for it
                    _error(d, name, ident, exc)
                    return 1  # nothing after a failed file may be committed: stop; a new pusher retries
                idle_since = time.monotonic()
                last_file = time.time()
            return 0
        finally:
            for _, f in pending:
                f.cancel()
            if listen is not None:
                os.close(listen)
            if last_file is not None:
                try:
                    _write(os.path.join(d, LAST), f"{last_file}\n")
                except OSError:
                    pass
