"""Rotation of the platform's own log files (``[[log_sources]]`` with ``rotate_bytes``), by the
rule of ``bvh_ops.logs.rotation.rotation_plan``: the file the platform writes is renamed once past
its size (the collector follows every file by its inode: what was not yet collected is read on
from the new name), and a rotated file is deleted only once collected to its end.

Carried out under the collector's own lock on the ops database (``collect.LOCK_KEY``): a
collector lists the files and then opens them, and a rename between the two would have it read a
file twice or miss one; two rotations at once would each shift the files from their own listing.
The files are listed again once the lock is held.

The platform is signalled only when it is provably the writer: the pid in its pid file is a
process id (never 0, -1 or a group), the process or one of its children (a master/worker
server's workers) has the active file open (``/proc/<pid>/fd``) and the process catches the
reopen signal (``/proc/<pid>/status`` SigCgt; the default action of SIGUSR1 and
SIGHUP ends a process). Each check is made before anything is renamed. A rotation: older rotated
files shift up by one (``.2`` -> ``.3`` …, highest first, never onto an existing name), the active
file becomes ``.1``, the signal is sent and the new file waited for. A platform that did not
reopen (its active file missing, ``.1`` still open) is signalled again on the next run and
reported failed until it does.

A deletion (a rotated file beyond the newest ``rotate_keep``, at least 1: ``.1`` may still be
written) needs, at the moment of deleting: the active file present, the file still the one
planned (same inode), its first bytes the ones the collector recorded (an inode can be reused at
once), its size equal to the stored offset (collected to its end), and no open handle of the
platform on it. Each step is one action in the report.

A rotated file beyond the newest ``rotate_keep`` whose writer stopped mid-line is sealed before
it is deleted (``rotation.SEAL_IDLE_SECONDS``): re-checked at the moment (the same inode and
size, the stored offset, not written since, held open by no process — every process's open files
looked at, not only the platform's: a worker the pid file does not lead to may still finish the
line; where some cannot be seen, only with the platform proven the writer), its unfinished last
line goes to the quarantine and its offset to its end in one transaction."""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bvh_ops.config import LogSource
from bvh_ops.logs import store
from bvh_ops.logs.collect import LOCK_KEY, head_digest
from bvh_ops.logs.offsets import HEAD_BYTES, Stored, head_length
from bvh_ops.logs.reader import MAX_LINE_BYTES, read_records
from bvh_ops.logs.rotation import SEAL_IDLE_SECONDS, LogFile, rotation_plan

REOPEN_WAIT_SECONDS = 5.0
LOCK_WAIT_SECONDS = 60.0  # a collect holding the logs lock is waited for this long


def log_file(path: Path) -> LogFile | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return LogFile(str(path), f"{st.st_dev}:{st.st_ino}", st.st_size, idle_seconds=max(0.0, time.time() - st.st_mtime))


def _unfinished_tail(path: str, offset: int, size: int, multiline_csv: bool) -> bool:
    """Whether what follows ``offset`` is only a record without its end (the collector reads no
    complete one from there: no newline, or a csvlog record whose quotes never close)."""
    if size <= offset:
        return False
    try:
        with open(path, "rb") as fh:
            return next(read_records(fh, offset, multiline_csv=multiline_csv), None) is None
    except OSError:
        return False


def rotated_files(active: Path) -> list[tuple[int, Path]]:
    """``active``.1, .2, … that exist (ASCII digits, no leading zero: ``.01`` is not ``.1``),
    newest (.1) first."""
    pattern = re.compile(re.escape(active.name) + r"\.([1-9][0-9]*)", re.ASCII)
    found = []
    for p in active.parent.iterdir() if active.parent.is_dir() else ():
        if (m := pattern.fullmatch(p.name)) and p.is_file() and not p.is_symlink():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _action(step: str, path: str, status: str, detail: str, t0: float) -> dict[str, Any]:
    return {"action": step, "object": path, "status": status, "seconds": round(time.monotonic() - t0, 3),
            "detail": detail}


def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 4_194_304


def _open_files(pid: int) -> set[str] | None:
    """device:inode of every file ``pid`` has open (None: not ours to see)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        return None
    except FileNotFoundError:
        return set()
    out = set()
    for fd in fds:
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        out.add(f"{st.st_dev}:{st.st_ino}")
    return out


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (one level: a server's workers)."""
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _catches(pid: int, signum: int) -> bool | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        return None
    return None


class Writer:
    """The platform process behind ``reopen_pid_file``, once proven to write ``target`` and to
    catch the reopen signal; ``why`` says what is missing when it is not."""

    def __init__(self, source: LogSource, target: LogFile | None) -> None:
        self.pid: int | None = None
        self.open: set[str] = set()
        self.signum = int(getattr(signal, "SIG" + source.reopen_signal))
        self.why = ""
        self.down = False  # the platform is simply not running (else: a misconfiguration, reported failed)
        path = Path(str(source.reopen_pid_file))
        try:
            text = path.read_text().split()[0]
            pid = int(text, 10)
        except (OSError, ValueError, IndexError) as exc:
            self.why = f"no platform pid in {path} ({getattr(exc, 'strerror', None) or exc})"
            self.down = isinstance(exc, FileNotFoundError)
            return
        if not 1 < pid <= _pid_max():
            self.why = f"{path} holds {text!r}, not a process id"
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            self.why = f"the platform's pid file {path} names no running process ({pid})"
            self.down = True
            return
        except PermissionError:
            self.why = f"pid {pid} ({path}) is another user's process: run as the platform's user or root"
            return
        files = self.files_of(pid)
        if files is None:
            self.why = f"cannot see pid {pid}'s open files (/proc/{pid}/fd): run as the platform's user or root"
            return
        if target is None or target.file_id not in files:
            self.why = (f"pid {pid} ({path}) and its children do not have {target.path if target else 'the log'} "
                        "open: not the platform writing it (a stale pid file?)")
            return
        if not _catches(pid, self.signum):
            self.why = (f"pid {pid} does not catch SIG{source.reopen_signal}: sending it would end the process or "
                        "be ignored (a stale pid file, or a platform without a reopen handler)")
            return
        self.pid, self.open = pid, files

    @staticmethod
    def files_of(pid: int) -> set[str] | None:
        """What ``pid`` and its child processes have open (a master/worker server: the pid file
        names the master, which handles the signal; its workers hold the file). None: ``pid``'s
        own are not ours to see."""
        files = _open_files(pid)
        if files is None:
            return None
        for child in _children(pid):
            files |= _open_files(child) or set()
        return files

    def reopen(self, active: Path, t0: float, done: str, action: str = "rotate") -> dict[str, Any]:
        """Signal the writer and wait for its new ``active`` file (the outcome as ``action``)."""
        assert self.pid is not None
        try:
            os.kill(self.pid, self.signum)
        except OSError as exc:
            return _action(action, str(active), "failed", f"pid {self.pid} could not be signalled: {exc.strerror}; "
                           f"the platform writes on into {active.name}.1 (still collected)", t0)
        deadline = time.monotonic() + REOPEN_WAIT_SECONDS
        while log_file(active) is None:
            if time.monotonic() > deadline:
                return _action(action, str(active), "failed",
                               f"SIG{signal.Signals(self.signum).name[3:]} sent to pid {self.pid}, but no new "
                               f"{active.name} within {REOPEN_WAIT_SECONDS:g} s: the platform writes on into "
                               f"{active.name}.1 (still collected; signalled again next run)", t0)
            time.sleep(0.05)
        return _action(action, str(active), "done", done, t0)


def _head_matches(path: str, stored: Stored) -> bool:
    """The file's first bytes are those the collector recorded (as the collector compares them)."""
    if not stored.head_sha256:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return head_digest(fd, head_length(stored)) == stored.head_sha256
    finally:
        os.close(fd)


def rotate_source(conn: psycopg.Connection, source: LogSource, *, act: bool = True,
                  why_not: str = "", out: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Plan and (``act``) carry out the rotation of one source; its actions, appended to ``out``
    as they are done (what was done before an error stays reported). The caller holds the logs
    lock (``rotate_configured``)."""
    out = [] if out is None else out
    t0 = time.monotonic()
    active_path = Path(str(source.active_file))
    if active_path.is_symlink():
        out.append(_action("rotate", str(active_path), "failed", "active_file is a symbolic link: give the file the "
                           "platform writes itself (renaming the link would move no line)", t0))
        return out
    active = log_file(active_path)
    numbered = rotated_files(active_path)
    rotated = [f for _, p in numbered if (f := log_file(p)) is not None]
    stored = store.load_offsets(conn, source.name)
    if active is None:
        # Renamed, and no new file: the platform did not reopen (or is not running).
        newest = rotated[0] if rotated and numbered[0][0] == 1 else None
        if newest is None:
            out.append(_action("rotate", str(active_path), "skipped", "the file does not exist (yet)", t0))
        elif not act:
            out.append(_action("reopen", str(active_path), "skipped", f"{why_not or 'dry run'}: the platform has not "
                               f"reopened {active_path.name} since its rotation", t0))
        elif (writer := Writer(source, newest)).pid is None:
            out.append(_action("reopen", str(active_path), "skipped" if writer.down else "failed",
                               f"{active_path.name} is missing since its rotation and the platform cannot be "
                               f"signalled: {writer.why}", t0))
        else:
            out.append(writer.reopen(active_path, t0, f"the platform (pid {writer.pid}) had not reopened "
                                                      f"{active_path.name} since its rotation: it has now", "reopen"))
        return out
    # One file under two names (a hard link, a rename caught mid-listing) is one file: its
    # lowest-numbered name (as the collector reads it once).
    seen: set[str] = set()
    rotated = [f for f in rotated if not (f.file_id in seen or seen.add(f.file_id))]
    keep = max(1, source.rotate_keep)
    for i, f in enumerate(rotated[keep:], keep):  # beyond keep, idle, not collected to its end: an unfinished line?
        if (s := stored.get(f.file_id)) is not None and s.offset < f.size and f.idle_seconds >= SEAL_IDLE_SECONDS:
            rotated[i] = replace(f, unfinished_tail=_unfinished_tail(f.path, s.offset, f.size,
                                                                     source.format == "postgres-csvlog"))
    planned = {f.path: f for f in rotated}
    steps = rotation_plan(active, rotated, stored, max_bytes=int(source.rotate_bytes or 0), keep=keep)
    writer = Writer(source, active) if act and steps else None
    # seals, then deletions (a sealed file is deleted in the same run), then the rotation, which
    # renames the files they name
    order = {"seal": 0, "delete": 1}
    for step in sorted(steps, key=lambda s: order.get(s.action, 2)):
        what = "rotate" if step.path == str(active_path) else "delete"
        if step.action == "wait":
            out.append(_action(what, step.path, "skipped", step.reason, t0))
        elif not act:
            out.append(_action(step.action, step.path, "skipped", f"{why_not or 'dry run'}: {step.reason}", t0))
        elif step.action == "seal":
            out.append(_seal(conn, source, planned[step.path], stored, writer, step.reason, t0))
        elif step.action == "delete":
            out.append(_delete(step.path, planned[step.path], stored, writer, step.reason, t0))
        else:
            out.append(_rotate(writer, active_path, numbered, step.reason, t0))
    return out


def _seal(conn: psycopg.Connection, source: LogSource, planned: LogFile, stored: dict[str, Stored],
          writer: Writer | None, reason: str, t0: float) -> dict[str, Any]:
    """Keep a rotated file's unfinished last line in the quarantine and store its offset at the
    file's end, in one transaction, if the file is still as planned; ``stored`` is updated."""
    path = planned.path
    s = stored.get(planned.file_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return _action("seal", path, "skipped", "changed since planned: left for the next run", t0)
    try:
        st = os.fstat(fd)
        if f"{st.st_dev}:{st.st_ino}" != planned.file_id or st.st_size != planned.size or s is None \
                or time.time() - st.st_mtime < SEAL_IDLE_SECONDS:
            return _action("seal", path, "skipped", "changed since planned: left for the next run", t0)
        if s.offset >= st.st_size:
            return _action("seal", path, "skipped", "already collected to its end", t0)
        holders, unseen = _holders(planned.file_id)
        if holders:
            return _action("seal", path, "skipped", f"pid {', '.join(map(str, sorted(holders)))} still has it open: "
                                                    "its last line may yet be finished", t0)
        if unseen and (writer is None or writer.pid is None):
            return _action("seal", path, "skipped", "cannot see every process's open files and the platform is not "
                                                    "proven the writer: run as root or the platform's user", t0)
        if s.head_sha256 and head_digest(fd, head_length(s)) != s.head_sha256:
            return _action("seal", path, "skipped", "its first bytes are not those collected (another file under a "
                                                    "reused inode?): left for the collector", t0)
        length = st.st_size - s.offset
        tail = os.pread(fd, min(length, MAX_LINE_BYTES), s.offset)
        text = (tail if length <= MAX_LINE_BYTES else tail[:1024]).decode("utf-8", "replace")
        blank = length <= MAX_LINE_BYTES and not tail.strip()  # a csvlog's trailing blank line: nothing to keep
        now = datetime.now(UTC)
        with conn.transaction():
            if not blank:
                store.quarantine(conn, [(source.name, path, s.offset, text,
                                         f"the file ends in a line without its end ({length} bytes): its writer "
                                         "stopped mid-line; sealed when the rotated file was deleted")], now)
            head = head_digest(fd, min(HEAD_BYTES, st.st_size))
            store.save_offset(conn, source.name, planned.file_id, path, st.st_size, head, now)
        stored[planned.file_id] = Stored(planned.file_id, path, st.st_size, head)
    finally:
        os.close(fd)
    return _action("seal", path, "done", "only blank lines after its last record" if blank else reason, t0)


def _holders(file_id: str) -> tuple[set[int], bool]:
    """The processes other than ours with ``file_id`` open, and whether some process's open
    files could not be seen (another user's, without root)."""
    holders, unseen, me = set(), False, os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        files = _open_files(int(name))
        if files is None:
            unseen = True
        elif file_id in files:
            holders.add(int(name))
    return holders, unseen


def _delete(path: str, planned: LogFile, stored: dict[str, Stored], writer: Writer | None, reason: str,
            t0: float) -> dict[str, Any]:
    now = log_file(Path(path))
    s = stored.get(planned.file_id)
    if now is None or now.file_id != planned.file_id or s is None:
        return _action("delete", path, "skipped", "changed since planned: left for the next run", t0)
    if now.size != s.offset:
        return _action("delete", path, "skipped", f"{now.size - s.offset} bytes not yet collected", t0)
    if not _head_matches(path, s):
        return _action("delete", path, "skipped", "its first bytes are not those collected (another file under a "
                                                  "reused inode?): left for the collector", t0)
    if writer is not None and writer.pid is not None and planned.file_id in (Writer.files_of(writer.pid) or set()):
        return _action("delete", path, "skipped", f"the platform (pid {writer.pid} or a child) still has it open", t0)
    os.unlink(path)
    return _action("delete", path, "done", reason, t0)


def _rotate(writer: Writer | None, active_path: Path, numbered: list[tuple[int, Path]], reason: str,
            t0: float) -> dict[str, Any]:
    if writer is None or writer.pid is None:
        why, down = (writer.why, writer.down) if writer is not None else ("no platform", True)
        # the platform not running: nothing to do; anything else is a configuration to mend, and says so
        return _action("rotate", str(active_path), "skipped" if down else "failed",
                       f"{why}: not rotated (nothing would reopen it)", t0)
    for n, path in sorted((n, p) for n, p in numbered if p.exists())[::-1]:  # highest first
        target = path.with_name(f"{active_path.name}.{n + 1}")
        if os.path.lexists(target):
            return _action("rotate", str(active_path), "failed", f"{target.name} exists: not overwritten; nothing "
                           "more renamed", t0)
        os.rename(path, target)
    first = active_path.with_name(active_path.name + ".1")
    if os.path.lexists(first):
        return _action("rotate", str(active_path), "failed", f"{first.name} exists: not overwritten", t0)
    os.rename(active_path, first)
    return writer.reopen(active_path, t0, f"{reason}; renamed to {first.name}, the platform (pid {writer.pid}) "
                                          "reopened it")


def rotate_configured(settings, conn: psycopg.Connection, *, act: bool = True, why_not: str = "",
                      lock_wait: float = LOCK_WAIT_SECONDS) -> list[dict[str, Any]]:
    """Every source with ``rotate_bytes``, under the logs lock (waited for up to ``lock_wait``
    seconds; a dry run takes none): their actions. A source that fails is one failed action;
    the others go on."""
    sources = [s for s in settings.log_sources if s.rotate_bytes is not None]
    if not sources:
        return []
    if act and not conn.autocommit:  # a seal's quarantine row and offset must be committed before the unlink
        raise ValueError("rotate_configured needs a connection with autocommit on")
    locked = False
    if act:
        deadline = time.monotonic() + lock_wait
        while not (locked := conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]):
            if time.monotonic() > deadline:
                return [{"action": "rotate", "object": str(s.active_file), "status": "skipped", "seconds": 0.0,
                         "detail": f"a log collection held the logs lock for {lock_wait:g} s: rotation waits for "
                                   "the next run"} for s in sources]
            time.sleep(0.5)
    out: list[dict[str, Any]] = []
    try:
        for source in sources:
            try:
                rotate_source(conn, source, act=act, why_not=why_not, out=out)
            except Exception as exc:  # noqa: BLE001 - one source's failure is its action; the rest go on
                out.append({"action": "rotate", "object": str(source.active_file), "status": "failed",
                            "seconds": 0.0, "detail": f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"})
    finally:
        if locked:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            except psycopg.Error:
                pass  # a broken connection: the server dropped its session lock with it
    return out
