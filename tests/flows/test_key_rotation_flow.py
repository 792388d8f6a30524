"""key-rotation under the session's prefect_test_harness: a dry run changes nothing and publishes
its plan; the applying run rewraps and publishes the report."""

from __future__ import annotations

import json

import pytest

from bvh_ops.keys import load_recipients, write_keypair

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _segment(segno: int, size: int = 100_000) -> bytes:
    import os
    import struct

    head = struct.pack("<HHIQI4xQII", 0xD118, 0x0002, 1, segno * (16 << 20), 0, 7, 16 << 20, 8192)
    return head + os.urandom(size - len(head))


def test_dry_run_then_apply(env_settings, repo_dir, tmp_path, keypair):
    from prefect.client.orchestration import get_client

    from bvh_ops.config import load_settings
    from bvh_ops.wal.store import wal_key, wal_push
    from flows.key_rotation import key_rotation

    env_settings("postgresql://unused@127.0.0.1:1/x", f"file://{repo_dir}")
    seg = tmp_path / "000000010000000000000007"
    seg.write_bytes(_segment(7))
    wal_push(load_settings(), str(seg))
    index = repo_dir / (wal_key(seg.name) + ".json")
    before = index.read_bytes()
    new_pub, _ = write_keypair(tmp_path / "new")

    dry = key_rotation(add=[str(new_pub)])
    assert dry["dry_run"] and dry["planned"]["rewrap"] == {"wal": 1}
    assert index.read_bytes() == before
    done = key_rotation(add=[str(new_pub)], dry_run=False)
    assert done["ok"] and done["rewrapped"] == {"wal": 1}
    kids = {r.key_id for r in load_recipients([keypair[0], new_pub])}
    assert set(json.loads(index.read_bytes())["key_ids"]) == kids
    with get_client(sync_client=True) as client:
        art = max((a for a in client.read_artifacts(limit=200) if a.key == "key-rotation"), key=lambda a: a.created)
    assert "rewrapped: 1 wal" in art.data
