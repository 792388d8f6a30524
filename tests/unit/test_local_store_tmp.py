"""A file:// write that fails part-way (disk full, quota, a file-size limit) leaves no hidden
temporary file behind and reports one StorageError: PostgreSQL retries archive_command for
ever, and every leftover would take more of the space that ran out. The failure is a real
EFBIG from the kernel (RLIMIT_FSIZE in a child process), at the commit's flush of what the
writer still buffers: an index entry always takes that path (a few hundred bytes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CHILD = r"""
import json, os, resource, signal, sys
from bvh_ops.errors import StorageError
from bvh_ops.storage.local import LocalStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
store = LocalStore(sys.argv[1])
store.check()
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
out = {}
for how in ("entry", "plain", "writer"):
    key = f"wal/00000001/0000000100000000000000{len(out):02X}" + (".json" if how == "entry" else "")
    try:
        if how == "writer":
            w = store.open_writer(key, if_absent=True)
            w.write(b"x" * 1000)
            w.commit()
        else:
            store.put_bytes(key, b"x" * 1000, if_absent=how == "entry")
        out[how] = "stored"
    except StorageError as exc:
        out[how] = "StorageError: " + str(exc)
    except BaseException as exc:
        out[how] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_a_failed_commit_leaves_no_temporary_file_and_one_storage_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}  # this checkout's bvh_ops
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for how, result in out.items():
        assert result.startswith("StorageError: committing"), (how, result)
        assert "File too large" in result, (how, result)
    assert sorted(p.name for p in (tmp_path / "wal" / "00000001").iterdir()) == []  # no .tmp-* left
