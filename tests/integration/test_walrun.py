"""What PostgreSQL runs for each WAL file: `python -I -S …/bvh_ops/walrun.py` (wal_command), the
`bvh-ops-wal` command without ``site``. Its fast path imports no site, ignores PYTHON* variables,
runs the package it lies in, and still reports success only for the exact bytes the pusher
stored: a file changed after the pusher's verdict is refused, also when its size and mtime are
put back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bvh_ops.config import Settings
from bvh_ops.pg.cluster import WAL_MODULES, wal_command
from bvh_ops.wal.store import wal_fetch
from tests.integration.test_wal import _archived_as_postgres_does, _committed, _ready_wal, _segment
from tests.waiting import wait_until


def _run(tmp_path: Path, env: dict, name: str, *python_opts: str) -> subprocess.CompletedProcess:
    python, *rest = wal_command().split()
    return subprocess.run([python, *python_opts, *rest, "push", f"pg_wal/{name}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True)


def test_wal_command_is_the_launcher_of_this_package():
    python, *opts, launcher = wal_command().split()
    assert python == sys.executable and opts == ["-I", "-S"]
    import bvh_ops

    assert Path(launcher) == Path(bvh_ops.__file__).parent / "walrun.py"


@pytest.mark.parametrize("digest", ["sha256", "blake3"])
def test_launcher_push_fast_path_without_site_and_refuses_a_changed_file(keypair, tmp_path, digest):
    wal_dir, repo, env, names = _ready_wal(tmp_path, keypair, list(range(0x40, 0x44)), f'wal_digest = "{digest}"\n')
    env = env | {"PYTHONPATH": str(tmp_path / "elsewhere")}  # -I: not where bvh_ops comes from

    first = _run(tmp_path, env, names[0])
    assert first.returncode == 0, first.stderr
    assert _committed(repo, names[0])
    _archived_as_postgres_does(wal_dir, names[0])
    wait_until(lambda: all(_committed(repo, n) for n in names), "the ready files archived ahead")
    for n in names:  # stored as they are on disk
        fetched = tmp_path / f"fetched-{n}"
        wal_fetch(Settings(repository=f"file://{repo}", identity=keypair[1]), n, str(fetched))
        assert fetched.read_bytes() == (wal_dir / n).read_bytes()

    # The verdict is there: the call answers from it, importing neither site nor a third-party
    # module but the BLAKE3 binding its verdict names.
    fast = _run(tmp_path, env, names[1], "-X", "importtime")
    assert fast.returncode == 0, fast.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in fast.stderr.splitlines() if line.startswith("import time:")}
    assert "bvh_ops.walcmd" in imported and "bvh_ops.wal.pusher" in imported
    assert not imported & {"site", "pydantic", "zstandard", "cryptography", "bvh_ops.config"}, imported
    assert ("blake3" in imported) == (digest == "blake3")
    _archived_as_postgres_does(wal_dir, names[1])

    # A verdict without a digest, or with one of an algorithm the call does not know, proves
    # nothing: the call archives (here: finds archived) the file the full way, which loads site.
    (spool,) = (tmp_path / "st" / "archive-spool").iterdir()
    ok = spool / f"{names[3]}.ok"
    wait_until(ok.exists, "the pusher's verdict on the last file")
    ok.write_text(f"unknown: {ok.read_text().split()[1]}\n")
    empty = _run(tmp_path, env, names[3], "-X", "importtime")
    assert empty.returncode == 0, empty.stderr
    assert "site" in {line.rsplit("|", 1)[1].strip() for line in empty.stderr.splitlines()
                      if line.startswith("import time:")}

    # Changed after the verdict, same size and mtime put back: the call hashes what is there now,
    # falls back to the full push (which loads site for its packages) and that refuses it.
    seg = wal_dir / names[2]
    st = seg.stat()
    seg.write_bytes(_segment(0x42))
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert seg.stat().st_size == st.st_size and seg.stat().st_mtime_ns == st.st_mtime_ns
    changed = _run(tmp_path, env, names[2])
    assert changed.returncode != 0 and "different content" in changed.stderr, changed.stderr

    # Replaced by another file (a new inode) with the archived bytes: accepted, those bytes are stored.
    same = seg.with_name("copy")
    fetched = tmp_path / f"fetched-{names[3]}"
    same.write_bytes(fetched.read_bytes())
    os.replace(same, wal_dir / names[3])
    again = _run(tmp_path, env, names[3])
    assert again.returncode == 0, again.stderr


def test_wal_modules_are_what_the_commands_import():
    """WAL_MODULES (whose bytecode wal_command writes for the server's OS user) holds every
    bvh_ops module the calls and the pusher import."""
    code = ("import sys; sys.path.append(sys.argv[1]); import bvh_ops.walcmd as w; w._site(); "
            "import bvh_ops.wal.pusher as p; from bvh_ops.config import load_settings; "
            "from bvh_ops.keys import load_recipients; from bvh_ops.storage import open_store; "
            "import bvh_ops.storage.local, bvh_ops.wal.store, bvh_ops.wal.fence; "
            "print(' '.join(m for m in sys.modules if m.startswith('bvh_ops')))")
    import bvh_ops

    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(Path(bvh_ops.__file__).parents[1])],
                         capture_output=True, text=True, check=True).stdout.split()
    assert set(out) <= set(WAL_MODULES), set(out) - set(WAL_MODULES)
