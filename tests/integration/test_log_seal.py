"""The seal of a rotated log file cut mid-line (bvh_ops.logs.rotate._seal), at its edges: a live
process holding the file that the pid file does not lead to (a writer without a handler, a
grandchild worker) keeps it unsealed; one file under two names is sealed once; a csvlog record
whose quotes never close is kept whole, a trailing blank line is not a "line without its end";
a tail of several MiB without a newline is kept bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psycopg

from bvh_ops.logs.rotate import rotate_configured
from bvh_ops.logs.rotation import SEAL_IDLE_SECONDS
from tests.integration.test_log_rotation import source
from tests.integration.test_logs_collect import ops, run_collect, seqs, settings_for, stored  # noqa: F401
from tests.waiting import wait_until


def line(i: int) -> bytes:
    return (json.dumps({"timestamp": "2030-01-01T00:00:00Z", "level": "info", "category": "application",
                        "event": "x", "seq": i}) + "\n").encode()


def make_idle(p) -> None:
    stale = p.stat().st_mtime - SEAL_IDLE_SECONDS - 5
    os.utime(p, (stale, stale))


def quarantined(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT path, file_offset, line, error FROM ops.log_quarantine ORDER BY id").fetchall()


def rotate(settings, dsn, **kw):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return rotate_configured(settings, conn, **kw)


def layout(tmp_path, tail: bytes, *, fmt_lines=None):
    """app.log, app.log.1 (complete lines), app.log.2 (complete lines + ``tail``)."""
    d = tmp_path / "logs"
    d.mkdir()
    path = d / "app.log"
    path.write_bytes(b"".join(line(i) for i in range(20, 30)))
    path.with_name("app.log.1").write_bytes(b"".join(line(i) for i in range(10, 20)))
    old = path.with_name("app.log.2")
    old.write_bytes((fmt_lines if fmt_lines is not None else b"".join(line(i) for i in range(10))) + tail)
    return path, old


def test_seal_does_not_check_open_handles_when_the_writer_is_not_proven(ops, tmp_path):  # noqa: F811
    """The docstring promises 'not held open by the platform'. A platform process that has the
    file open (and could finish the line) but cannot be *proven* the writer (here: it does not
    catch SIGUSR1; equally: a grandchild worker, another user's process, an unreadable pid file)
    gets no open-handle check at all: the line is sealed and the file unlinked under it."""
    path, old = layout(tmp_path, b'{"timestamp": "2030-01-01T00:00:00Z", "event": "cut", "se')
    pid_file = tmp_path / "app.pid"
    settings = settings_for(tmp_path, ops, source(path, pid_file, rotate_bytes=10**9))
    run_collect(settings, ops)
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import time; a = open({str(path)!r}, 'a'); b = open({str(old)!r}, 'a'); "
                               "time.sleep(120)"])
    try:
        wait_until(lambda: len(os.listdir(f"/proc/{holder.pid}/fd")) >= 5, "the files open")
        pid_file.write_text(str(holder.pid))
        make_idle(old)
        seal, delete = [a for a in rotate(settings, ops) if a["object"] == str(old)]
        assert old.exists() and quarantined(ops) == [], seal
        assert seal["status"] == "skipped" and f"pid {holder.pid} still has it open" in seal["detail"], seal
        assert delete["status"] == "skipped" and "not yet collected" in delete["detail"], delete
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_one_file_under_two_rotated_names_is_sealed_once(ops, tmp_path):  # noqa: F811
    cut = b'{"timestamp": "2030-01-01T00:00:00Z", "event": "cut", "se'
    path, old = layout(tmp_path, cut)
    os.link(old, path.with_name("app.log.3"))
    settings = settings_for(tmp_path, ops, source(path, tmp_path / "app.pid", rotate_bytes=10**9))
    run_collect(settings, ops)
    make_idle(old)
    acts = rotate(settings, ops)
    q = quarantined(ops)
    assert len(q) == 1 and q[0][2].encode() == cut, (q, acts)
    assert [(a["action"], a["status"]) for a in acts] == [("seal", "done"), ("delete", "done")], acts
    assert not old.exists()  # the other name is left: a link to nothing more than its own bytes


CSV_REC = ('2030-01-01 00:00:00.000 UTC,"u","db",123,"127.0.0.1:5",abc.1,1,"SELECT",2030-01-01 00:00:00 UTC,'
           '3/1,0,LOG,00000,"statement: SELECT 1",,,,,,,,,"psql","client backend",,0\n')


def csv_layout(tmp_path, dsn: str, tail: str):
    """pg.csv and pg.csv.1 (one record each), pg.csv.2 (three records + ``tail``): its settings."""
    d = tmp_path / "logs"
    d.mkdir()
    path = d / "pg.csv"
    path.write_text(CSV_REC)
    path.with_name("pg.csv.1").write_text(CSV_REC)
    old = path.with_name("pg.csv.2")
    old.write_text(CSV_REC * 3 + tail)
    src = {"name": "pg", "path": f"{path}*", "format": "postgres-csvlog", "rotate_bytes": 10**9, "rotate_keep": 1,
           "active_file": str(path), "reopen_pid_file": str(tmp_path / "pg.pid")}
    return old, settings_for(tmp_path, dsn, src)


def test_csvlog_unclosed_record_is_sealed_whole(ops, tmp_path):  # noqa: F811
    open_rec = ('2030-01-01 00:00:01.000 UTC,"u","db",123,"127.0.0.1:5",abc.1,2,"SELECT",2030-01-01 00:00:00 UTC,'
                '3/1,0,LOG,00000,"statement: SELECT\n  1,\n')
    old, settings = csv_layout(tmp_path, ops, open_rec)
    r = run_collect(settings, ops)
    assert r.records == 5, r
    make_idle(old)
    acts = [a for a in rotate(settings, ops) if a["object"] == str(old)]
    assert [(a["action"], a["status"]) for a in acts] == [("seal", "done"), ("delete", "done")], acts
    ((_, off, text, _),) = quarantined(ops)
    assert (off, text) == (len(CSV_REC) * 3, open_rec)


def test_huge_unterminated_tail_is_sealed_bounded(ops, tmp_path):  # noqa: F811
    from bvh_ops.logs.reader import MAX_LINE_BYTES

    path, old = layout(tmp_path, b"")
    with open(old, "ab") as fh:
        fh.truncate(old.stat().st_size + 3 * MAX_LINE_BYTES)  # NULs without a newline (a crash)
    settings = settings_for(tmp_path, ops, source(path, tmp_path / "app.pid", rotate_bytes=10**9))
    run_collect(settings, ops)
    make_idle(old)
    acts = [a for a in rotate(settings, ops) if a["object"] == str(old)]
    assert [(a["action"], a["status"]) for a in acts] == [("seal", "done"), ("delete", "done")], acts
    ((_, _, text, err),) = quarantined(ops)
    assert len(text) <= 1024 and str(3 * MAX_LINE_BYTES) in err


GRANDCHILD = """
import os, signal, subprocess, sys, time
from pathlib import Path
active, old, pid_file = sys.argv[1:4]
signal.signal(signal.SIGUSR1, lambda *_: None)
inner = "import time; a = open(%r, 'a'); b = open(%r, 'a'); time.sleep(120)" % (active, old)
# a launcher -> a worker's worker: the pid file's process and its children do not hold the files
child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', %r])" % inner])
Path(pid_file).write_text(str(os.getpid()))
child.wait()
"""


def test_seal_of_a_file_a_grandchild_worker_still_holds(ops, tmp_path):  # noqa: F811
    path, old = layout(tmp_path, b'{"timestamp": "2030-01-01T00:00:00Z", "event": "cut", "se')
    pid_file = tmp_path / "app.pid"
    settings = settings_for(tmp_path, ops, source(path, pid_file, rotate_bytes=10**9))
    run_collect(settings, ops)
    ino = old.stat().st_ino
    launcher = subprocess.Popen([sys.executable, "-c", GRANDCHILD, str(path), str(old), str(pid_file)],
                                start_new_session=True)
    try:
        def held():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if any(os.stat(f"/proc/{pid}/fd/{fd}").st_ino == ino for fd in os.listdir(f"/proc/{pid}/fd")):
                        return True
                except OSError:
                    pass
            return False
        wait_until(lambda: pid_file.exists() and held(), "the grandchild holding app.log.2")
        make_idle(old)
        acts = rotate(settings, ops)
        assert old.exists() and quarantined(ops) == [], acts
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()


def test_csvlog_trailing_blank_line(ops, tmp_path):  # noqa: F811
    old, settings = csv_layout(tmp_path, ops, "\n")
    run_collect(settings, ops)
    make_idle(old)
    acts = [a for a in rotate(settings, ops) if a["object"] == str(old)]
    assert quarantined(ops) == [] and not old.exists(), acts  # deleted, nothing called cut
    assert acts[0]["action"] == "seal" and "only blank lines" in acts[0]["detail"], acts
