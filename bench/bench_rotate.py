"""Key rotation time per 1,000 backups: `keys rotate` over synthetic small backups in a file://
repository (each a signed manifest and one encrypted object, as a logical backup has), side by
side with what rotation cost before format 3 — re-encrypting every object (the format-2 path,
which `keys rotate` still takes for format-2 objects). Peak RSS of the process is reported.
Two parts: N small backups (the per-backup cost: manifest read, envelope opened and re-sealed,
manifest signed and committed with fsync), and a few large ones (where re-encryption's cost grows
with the bytes and a rewrap's does not).
Not a test: `python bench/bench_rotate.py [--backups 1000] [--object-kib 256] [--large-mib 64] [--quick]`."""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save_result  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.keys import load_recipients, write_keypair  # noqa: E402
from bvh_ops.repository.manifest import Manifest  # noqa: E402
from bvh_ops.repository.open import open_repository  # noqa: E402
from bvh_ops.repository.repo import stats_to_entry  # noqa: E402
from bvh_ops.rotation.run import rotate  # noqa: E402
from bvh_ops.stream import EncryptingWriter, seal_data_key  # noqa: E402


def make_backups(settings: Settings, n: int, object_bytes: int, *, version: int) -> None:
    import bvh_ops.repository.repo as repo_mod

    repo, host_key = open_repository(settings)
    recipients = load_recipients(settings.recipients)
    ids = tuple(r.key_id for r in recipients)
    piece = min(object_bytes, 1 << 20)
    chunk = os.urandom(piece // 2) * 2   # half compressible, like a dump; written piece by piece
    start = datetime(2026, 1, 1, tzinfo=UTC)
    original = repo_mod.EncryptingWriter
    if version == 2:
        repo_mod.EncryptingWriter = functools.partial(EncryptingWriter, format_version=2)
    try:
        for i in range(n):
            at = start + timedelta(hours=i)
            bid = f"{at:%Y%m%dT%H%M%SZ}-logical-{i:06x}"
            w = repo.begin(bid)
            data_key = os.urandom(32)
            with w.object("dump.pgcustom", data_key=data_key, envelopes=seal_data_key(data_key, recipients),
                          compression_level=3, segment_size=1 << 20) as obj:
                for _ in range(object_bytes // piece):
                    obj.write(chunk)
            entry = stats_to_entry("dump.pgcustom", obj.stats, ids, "zstd-3")
            m = Manifest(backup_id=bid, kind="logical", tool_version="bench", started_at=at.isoformat(),
                         finished_at=at.isoformat(), database="bench", server_version="18.0",
                         server_version_num=180000, system_identifier="1", snapshot_id="", dump_format="custom",
                         compression="zstd-3", kem=recipients[0].kem, key_ids=ids, host="bench", objects=(entry,))
            if version == 2:
                w._envelopes.clear()   # format 2: no envelopes in the manifest
            w.commit(m, host_key)
    finally:
        repo_mod.EncryptingWriter = original


def run(work: Path, n: int, object_bytes: int, version: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    a_pub, a_key = write_keypair(work / "a")
    b_pub, _ = write_keypair(work / "b")
    a_id = load_recipients([a_pub])[0].key_id
    base = dict(repository=f"file://{work / 'repo'}", identity=a_key, state_dir=work / "state", segment_size_kib=1024)
    settings = Settings(recipients=[a_pub], **base)
    t0 = time.monotonic()
    make_backups(settings, n, object_bytes, version=version)
    made = time.monotonic() - t0
    rotated = Settings(recipients=[b_pub], **base)
    t0 = time.monotonic()
    report = rotate(rotated, add=[], remove=[a_id])
    seconds = time.monotonic() - t0
    assert report.ok and sum({**report.rewrapped, **report.rewritten}.values()) == n, report.to_json()
    return {"backups": n, "object_bytes": object_bytes, "format": version, "seconds_to_create": round(made, 2),
            "seconds_to_rotate": round(seconds, 2), "seconds_per_1000": round(seconds * 1000 / n, 2),
            "rewrapped": report.rewrapped, "rewritten": report.rewritten}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backups", type=int, default=1000)
    ap.add_argument("--object-kib", type=int, default=256)
    ap.add_argument("--large-mib", type=int, default=64, help="object size of the large part")
    ap.add_argument("--large-backups", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="100 small backups, 4 large of 16 MiB")
    ap.add_argument("--workdir", default="/tmp/bvh-bench-rotate")
    args = ap.parse_args()
    n = 100 if args.quick else args.backups
    work = Path(args.workdir)
    large_n, large_mib = (4, 16) if args.quick else (args.large_backups, args.large_mib)
    v3 = run(work / "v3", n, args.object_kib << 10, 3)
    v2 = run(work / "v2", n, args.object_kib << 10, 2)
    big3 = run(work / "big3", large_n, large_mib << 20, 3)
    big2 = run(work / "big2", large_n, large_mib << 20, 2)
    shutil.rmtree(work, ignore_errors=True)
    save_result("rotate", {
        "small": {"rewrap_format_3": v3, "reencrypt_format_2": v2,
                  "reencrypt_over_rewrap": round(v2["seconds_to_rotate"] / v3["seconds_to_rotate"], 2)},
        "large": {"rewrap_format_3": big3, "reencrypt_format_2": big2,
                  "reencrypt_over_rewrap": round(big2["seconds_to_rotate"] / big3["seconds_to_rotate"], 2)},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpus": os.cpu_count(),
    })


if __name__ == "__main__":
    main()
