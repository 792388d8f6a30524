"""Rotation of the platform's log files, carried out (bvh_ops.logs.rotate): a real writer process
(the sample platform's JsonLog, reopening on SIGUSR1 as the platform does) keeps writing while
the file is rotated three times before anything is collected, then collected and the old files
deleted — every line reaches the ops database exactly once; a rotated file not collected to its
end is never deleted; a platform that is not running is never rotated away from."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from bvh_ops.logs.rotate import rotate_configured
from tests.integration.test_logs_collect import ops, run_collect, seqs, settings_for, stored  # noqa: F401
from tests.waiting import wait_until

WRITER = """
import os, signal, sys, time
from pathlib import Path
from bvh_ops.demo.platform.logs import JsonLog, reopen_on
log = JsonLog(sys.argv[1])
reopen_on(signal.SIGUSR1, [log])
Path(sys.argv[2]).write_text(str(os.getpid()))
stop = Path(sys.argv[3])
i = 0
while not stop.exists():
    log.write("application", "lottery.ticket_bought", seq=i, pad="x" * 200)
    i += 1
    time.sleep(0.002)
log.close()
Path(sys.argv[4]).write_text(str(i))
"""


def source(path, pid_file, keep=1, rotate_bytes=20_000) -> dict:
    return {"name": "app", "path": f"{path}*", "format": "json", "rotate_bytes": rotate_bytes, "rotate_keep": keep,
            "active_file": str(path), "reopen_pid_file": str(pid_file)}


@pytest.fixture
def writer(tmp_path):
    path = tmp_path / "logs" / "app.log"
    path.parent.mkdir()
    pid_file, stop, count = tmp_path / "app.pid", tmp_path / "stop", tmp_path / "count"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(pid_file), str(stop), str(count)])
    wait_until(lambda: pid_file.exists() and path.exists() and path.stat().st_size > 30_000, "the writer writing")

    def finish() -> int:
        stop.touch()
        assert proc.wait(timeout=30) == 0
        return int(count.read_text())

    yield path, pid_file, finish
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_rotated_while_written_every_line_collected_once(ops, tmp_path, writer):  # noqa: F811
    import psycopg

    path, pid_file, finish = writer

    def rotate(rotate_bytes=20_000, **kw):
        settings = settings_for(tmp_path, ops, source(path, pid_file, rotate_bytes=rotate_bytes))
        with psycopg.connect(ops, autocommit=True) as conn:
            return rotate_configured(settings, conn, **kw)

    assert all(a["status"] == "skipped" for a in rotate(act=False))  # a dry run renames nothing
    assert not path.with_name("app.log.1").exists()
    for _ in range(3):  # the writer goes on throughout; nothing collected yet
        wait_until(lambda: path.stat().st_size > 20_000, "the file past its size")
        inode = path.stat().st_ino
        actions = rotate()
        (r,) = [a for a in actions if a["action"] == "rotate"]
        assert r["status"] == "done" and "still to collect" in r["detail"], r
        assert path.with_name("app.log.1").stat().st_ino == inode and path.stat().st_ino != inode
        # beyond keep = 1, but not collected: never deleted
        assert all(a["status"] == "skipped" and "not yet collected" in a["detail"]
                   for a in actions if a["action"] == "delete")
    assert sorted(p.name for p in path.parent.iterdir()) == ["app.log", "app.log.1", "app.log.2", "app.log.3"]
    settings = settings_for(tmp_path, ops, source(path, pid_file))
    run_collect(settings, ops)  # every file read on from its own offset, under its new name
    deleted = [a["object"].rsplit("/", 1)[1] for a in rotate(rotate_bytes=10**9) if a["status"] == "done"]
    assert sorted(deleted) == ["app.log.2", "app.log.3"]
    written = finish()
    run_collect(settings, ops)
    got = seqs(stored(ops))
    assert got == list(range(written)), f"{len(got)} records for {written} lines"  # none lost, none twice
    assert sorted(p.name for p in path.parent.iterdir()) == ["app.log", "app.log.1"]


def test_a_platform_not_running_is_not_rotated_away_from(ops, tmp_path):  # noqa: F811
    path = tmp_path / "logs" / "app.log"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"timestamp": "2030-01-01T00:00:00Z", "level": "info", "category": "application",
                                        "event": "x", "seq": i}) + "\n" for i in range(500)))
    pid_file = tmp_path / "app.pid"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file.write_text(str(dead.pid))
    settings = settings_for(tmp_path, ops, source(path, pid_file))
    import psycopg

    with psycopg.connect(ops, autocommit=True) as conn:
        (a,) = rotate_configured(settings, conn)
    assert a["status"] == "skipped" and "names no running process" in a["detail"]
    assert not path.with_name("app.log.1").exists()
    # a live process that is not the writer (a stale pid file, the pid reused): never signalled —
    # SIGUSR1's default action would end it — and nothing renamed
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for pid in (str(bystander.pid), "0", "-1", f"-{os.getpgid(0)}", "99999999999", "x"):
            pid_file.write_text(pid)
            with psycopg.connect(ops, autocommit=True) as conn:
                (a,) = rotate_configured(settings, conn)
            # a misconfiguration, not a platform at rest: failed, so the run says so every day
            assert a["status"] == "failed" and ("do not have" in a["detail"] or "not a process id" in a["detail"]
                                                or "no platform pid" in a["detail"]), (pid, a)
            assert not path.with_name("app.log.1").exists() and bystander.poll() is None
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()
    # the writer, holding the file open but without a handler for the signal: not signalled either
    deaf = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(path)!r}, 'a'); time.sleep(60)"])
    try:
        wait_until(lambda: any(os.path.realpath(f"/proc/{deaf.pid}/fd/{fd}") == str(path)
                               for fd in os.listdir(f"/proc/{deaf.pid}/fd")), "the file open")
        pid_file.write_text(str(deaf.pid))
        with psycopg.connect(ops, autocommit=True) as conn:
            (a,) = rotate_configured(settings, conn)
        assert a["status"] == "failed" and "does not catch SIGUSR1" in a["detail"] and deaf.poll() is None
    finally:
        deaf.send_signal(signal.SIGKILL)
        deaf.wait()


def test_config_refuses_rotation_without_a_way_to_reopen(tmp_path):
    from pydantic import ValidationError

    from bvh_ops.config import Settings

    log = tmp_path / "app.log"
    for bad, needle in (({"active_file": str(log)}, "needs reopen_pid_file"),
                        ({"reopen_pid_file": "/run/app.pid"}, "needs active_file"),
                        ({"active_file": str(log), "reopen_pid_file": "/run/app.pid", "path": f"{log}"},
                         "must match active_file and its rotated files"),
                        ({"active_file": str(log), "reopen_pid_file": f"{log}.pid"}, "would be collected as a log"),
                        ({"active_file": str(log), "reopen_pid_file": "/run/app.pid", "rotate_keep": 0},
                         "greater than or equal to 1")):
        doc = {"name": "app", "path": f"{log}*", "format": "json", "rotate_bytes": 1000, **bad}
        with pytest.raises(ValidationError, match=needle):
            Settings(state_dir=tmp_path, log_sources=[doc])
    assert os.environ.get("BVH_OPS_LOG_SOURCES") is None


def test_under_the_collectors_lock_odd_names_left_alone_and_a_missed_reopen_retried(ops, tmp_path, writer):  # noqa: F811
    import psycopg

    from bvh_ops.logs.collect import LOCK_KEY

    path, pid_file, finish = writer
    settings = settings_for(tmp_path, ops, source(path, pid_file, keep=5))
    # a collect holding the logs lock: the rotation waits, then leaves it for the next run
    with psycopg.connect(ops, autocommit=True) as holder, psycopg.connect(ops, autocommit=True) as conn:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        (a,) = rotate_configured(settings, conn, lock_wait=0.3)
        assert a["status"] == "skipped" and "held the logs lock" in a["detail"] and not path.with_name(
            "app.log.1").exists()
    # a name that only looks like a rotated one (.01) is not .1: never shifted onto, never shifted
    odd = path.with_name("app.log.01")
    odd.write_text("")
    with psycopg.connect(ops, autocommit=True) as conn:
        (a,) = rotate_configured(settings, conn)
    assert a["status"] == "done" and odd.exists() and path.with_name("app.log.1").exists()
    # renamed by hand, no signal: the platform writes on into .1, app.log is missing — the next
    # run signals it again (before, every run said "nothing to rotate" while .1 grew)
    path.rename(path.with_name("app.log.hand"))  # out of the way: .1 stays the rotation's
    path.with_name("app.log.1").rename(path.with_name("app.log.2"))
    path.with_name("app.log.hand").rename(path.with_name("app.log.1"))
    assert not path.exists()
    with psycopg.connect(ops, autocommit=True) as conn:
        (a,) = rotate_configured(settings, conn)
    assert (a["action"], a["status"]) == ("reopen", "done") and path.exists(), (a, sorted(os.listdir(path.parent)))
    written = finish()
    run_collect(settings, ops)
    assert seqs(stored(ops)) == list(range(written))


def test_one_file_under_two_names_is_collected_once(ops, tmp_path):  # noqa: F811
    path = tmp_path / "logs" / "app.log"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"timestamp": "2030-01-01T00:00:00Z", "level": "info", "category": "application",
                                        "event": "x", "seq": i}) + "\n" for i in range(50)))
    os.link(path, path.with_name("app.log.1"))  # as a rename caught mid-listing shows it
    settings = settings_for(tmp_path, ops, {"name": "app", "path": f"{path}*", "format": "json"})
    run_collect(settings, ops)
    assert seqs(stored(ops)) == list(range(50))


def test_a_burst_of_reopen_signals_neither_kills_nor_hangs_the_writer(tmp_path, writer):
    """The handler takes no lock (Event.set's did: a signal arriving inside it waited on itself
    for ever, and the platform stopped answering)."""
    path, pid_file, finish = writer
    pid = int(pid_file.read_text())
    for _ in range(20):
        for _ in range(250):
            os.kill(pid, signal.SIGUSR1)
    size = path.stat().st_size
    wait_until(lambda: path.stat().st_size > size + 2000, "the writer still writing")
    assert finish() > 0


def test_a_collect_waits_briefly_for_a_rotation_and_then_says_who_may_hold_the_lock(ops, tmp_path):  # noqa: F811
    import psycopg

    from bvh_ops.errors import ConcurrencyError
    from bvh_ops.logs.collect import LOCK_KEY, collect, pipelines

    settings = settings_for(tmp_path, ops, {"name": "app", "path": f"{tmp_path}/app.log*", "format": "json"})
    with psycopg.connect(ops, autocommit=True) as holder, psycopg.connect(ops) as conn:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        from datetime import UTC, datetime

        with pytest.raises(ConcurrencyError, match="or a log rotation has held"):
            collect(conn, pipelines(settings), now=datetime.now(UTC), lock_wait=0.3)


MASTER = """
import os, signal, subprocess, sys, time
from pathlib import Path
writer, log, pid_file, stop, count = sys.argv[1:6]
child = subprocess.Popen([sys.executable, "-c", writer, log, pid_file + ".worker", stop, count])
signal.signal(signal.SIGUSR1, lambda *_: child.send_signal(signal.SIGUSR1))
Path(pid_file).write_text(str(os.getpid()))
while child.poll() is None:
    time.sleep(0.05)
"""


def test_a_master_whose_worker_writes_the_log_is_rotated(ops, tmp_path):  # noqa: F811
    """A master/worker server: the pid file names the master (it handles the signal and passes
    it on); its worker holds the file. Before, only the pid file's own process counted: such a
    platform was never rotated ("a stale pid file?")."""
    import psycopg

    path = tmp_path / "logs" / "app.log"
    path.parent.mkdir()
    pid_file, stop, count = tmp_path / "app.pid", tmp_path / "stop", tmp_path / "count"
    master = subprocess.Popen([sys.executable, "-c", MASTER, WRITER, str(path), str(pid_file), str(stop), str(count)])
    try:
        wait_until(lambda: pid_file.exists() and path.exists() and path.stat().st_size > 30_000, "the worker writing")
        settings = settings_for(tmp_path, ops, source(path, pid_file))
        inode = path.stat().st_ino
        with psycopg.connect(ops, autocommit=True) as conn:
            (a,) = rotate_configured(settings, conn)
        assert a["status"] == "done", a
        assert path.with_name("app.log.1").stat().st_ino == inode and path.stat().st_ino != inode
        stop.touch()
        assert master.wait(timeout=30) == 0
        run_collect(settings, ops)
        assert seqs(stored(ops)) == list(range(int(count.read_text())))
    finally:
        stop.touch()
        if master.poll() is None:
            master.kill()
            master.wait()


def test_a_rotated_file_its_writer_left_mid_line_is_sealed_into_the_quarantine_and_deleted(ops, tmp_path, writer):  # noqa: F811
    """A writer killed mid-line leaves a rotated file whose last line has no newline: the
    collector leaves that line for the writer to finish, so the file was never collected to its
    end and never deleted (the disk filled one rotation at a time). Once beyond rotate_keep and
    unwritten for SEAL_IDLE_SECONDS, that line goes to the quarantine and the file is deleted."""
    import psycopg

    from bvh_ops.logs.rotation import SEAL_IDLE_SECONDS

    path, pid_file, finish = writer
    settings = settings_for(tmp_path, ops, source(path, pid_file))

    def rotate(**kw):
        with psycopg.connect(ops, autocommit=True) as conn:
            return rotate_configured(settings, conn, **kw)

    for _ in range(2):
        wait_until(lambda: path.stat().st_size > 20_000, "the file past its size")
        assert [a["status"] for a in rotate() if a["action"] == "rotate"] == ["done"]
    settings = settings_for(tmp_path, ops, source(path, pid_file, rotate_bytes=10**9))  # no more renames
    old = path.with_name("app.log.2")
    cut = b'{"timestamp": "2030-01-01T00:00:00Z", "level": "info", "event": "cut", "se'
    with open(old, "ab") as fh:  # as a writer killed in the middle of a line leaves it
        fh.write(cut)
    run_collect(settings, ops)
    size = old.stat().st_size

    def quarantined() -> list[tuple]:
        with psycopg.connect(ops) as conn:
            return conn.execute("SELECT path, file_offset, line, error FROM ops.log_quarantine").fetchall()

    # just written: its writer might still finish the line — it waits, and says so
    (a,) = [a for a in rotate() if a["object"] == str(old)]
    assert a["status"] == "skipped" and "not yet collected" in a["detail"] and old.exists()
    stale = old.stat().st_mtime - SEAL_IDLE_SECONDS - 1
    os.utime(old, (stale, stale))
    dry = [a for a in rotate(act=False) if a["object"] == str(old)]
    assert [a["action"] for a in dry] == ["seal", "delete"] and all(a["status"] == "skipped" for a in dry)
    assert old.exists() and quarantined() == []
    seal, delete = [a for a in rotate() if a["object"] == str(old)]
    assert (seal["action"], seal["status"], delete["action"], delete["status"]) == ("seal", "done", "delete", "done")
    assert not old.exists()
    ((qpath, offset, line, error),) = quarantined()
    assert (qpath, offset, line.encode()) == (str(old), size - len(cut), cut) and "without its end" in error
    written = finish()
    run_collect(settings, ops)
    assert seqs(stored(ops)) == list(range(written))  # every complete line once; the cut one quarantined
