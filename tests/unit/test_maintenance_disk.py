"""The disk cleanup planner (pure, table-driven) and the leftover scan on real temporary trees:
only what is certainly orphaned (owner gone) AND untouched for the grace is removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bvh_ops.maintenance.disk import Leftover, check_mounts, decide, remove, scan, write_owner

HOUR = 3600.0


def lo(alive, age_h, kind="drill_scratch"):
    return Leftover("/x", kind, "drill process pid 1", alive, age_h * HOUR, 10)


@pytest.mark.parametrize(("alive", "age_h", "remove_it", "why"), [
    (False, 25, True, "is gone and nothing changed for 25.0 h"),
    (False, 23, False, "changed 23.0 h ago (grace 24 h)"),
    (True, 500, False, "in use"),
    (None, 500, False, "owner unknown"),
])
def test_decide(alive, age_h, remove_it, why):
    (d,) = decide([lo(alive, age_h)], 24 * HOUR)
    assert d.remove is remove_it and why in d.reason


def dead_owner_labels() -> dict:
    """The owner labels of a process that has exited (a drill killed -9)."""
    out = subprocess.run([sys.executable, "-c", "import json; from bvh_ops.orphans import owner_labels; "
                          "print(json.dumps(owner_labels()))"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    return json.loads(out.stdout)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def age(path: Path, hours: float) -> None:
    t = time.time() - hours * HOUR
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (t, t))
    os.utime(path, (t, t))


def test_scan_and_remove_on_real_trees(tmp_path):
    state, tmp, restores = tmp_path / "state", tmp_path / "tmp", tmp_path / "restores"
    drills = state / "drills"
    # a drill killed long ago, one still running (this process), one killed a moment ago, one
    # from before owner.json existed
    dead = drills / "drill-20300101T000000Z-aaaaaa"
    (dead / "data").mkdir(parents=True)
    (dead / "data" / "PG_VERSION").write_text("18\n")
    (dead / "owner.json").write_text(json.dumps(dead_owner_labels()))
    running = drills / "drill-20300101T000000Z-bbbbbb"
    write_owner(running)
    recent = drills / "drill-20300101T000000Z-cccccc-physical"
    recent.mkdir(parents=True)
    (recent / "owner.json").write_text(json.dumps(dead_owner_labels()))
    legacy = drills / "drill-20200101T000000Z-dddddd"
    legacy.mkdir(parents=True)
    # a physical restore whose recovery never ended (no server runs in its data directory)
    rdir = restores / "pitr" / "bvh_ops_recovery"
    (rdir / "prefetch").mkdir(parents=True)
    (rdir / "identity.key").write_bytes(b"secret key")
    (rdir / "prefetch" / "000000010000000000000003").write_bytes(b"w" * 100)
    (rdir.parent / "PG_VERSION").write_text("18\n")
    # temporary files: a dead backup's, a live one's, an old-style one without a pid
    tmp.mkdir()
    gone_tmp = tmp / f"bvh-incr-{dead_pid()}-abc"
    gone_tmp.mkdir()
    (gone_tmp / "backup_manifest").write_text("{}")
    toc = tmp / f"bvh-toc-{dead_pid()}-xyz.list"
    toc.write_text("toc")
    live_tmp = tmp / f"bvh-incr-{os.getpid()}-def"
    live_tmp.mkdir()
    nopid = tmp / "bvh-toc-q1w2e3.list"
    nopid.write_text("toc")
    other = tmp / "someone-else.txt"
    other.write_text("not ours")
    for p in (dead, running, legacy, rdir.parent, gone_tmp, toc, live_tmp, nopid, other):
        age(p, 48)

    found = {Path(x.path).name: x for x in scan(state, [restores], tmp)}
    assert "someone-else.txt" not in found and "pitr" not in found
    decisions = {Path(d.leftover.path).name: d for d in decide(list(found.values()), 24 * HOUR)}
    keep = {n for n, d in decisions.items() if not d.remove}
    assert {n for n, d in decisions.items() if d.remove} == {dead.name, "bvh_ops_recovery", gone_tmp.name, toc.name}
    assert keep == {running.name, recent.name, legacy.name, live_tmp.name, nopid.name}
    assert "in use" in decisions[running.name].reason and "grace" in decisions[recent.name].reason
    assert "owner unknown" in decisions[legacy.name].reason and "owner unknown" in decisions[nopid.name].reason
    assert found["bvh_ops_recovery"].bytes >= 110

    key_inode = (rdir / "identity.key")
    with open(key_inode, "rb") as held:   # the open handle still sees the overwritten blocks
        for d in decisions.values():
            if d.remove:
                remove(d.leftover)
        held.seek(0)
        assert held.read() == b"\0" * len(b"secret key")
    for p in (dead, rdir, gone_tmp, toc):
        assert not p.exists()
    for p in (running, recent, legacy, live_tmp, nopid, other, rdir.parent / "PG_VERSION"):
        assert p.exists()


def test_mounts_judged_by_the_thresholds(tmp_path):
    # warning at 0 %: any usage is past it (an almost empty tmpfs rounds to 0.0 % used)
    rows, findings = check_mounts([tmp_path, tmp_path / "missing"], warning=0, critical=100)
    assert rows[0]["path"] == str(tmp_path) and rows[0]["total_bytes"] > 0
    kinds = {(f["object"], f["severity"]) for f in findings}
    assert (str(tmp_path), "warning") in kinds and (str(tmp_path / "missing"), "warning") in kinds
    assert check_mounts([tmp_path], warning=100, critical=100)[1] == []
