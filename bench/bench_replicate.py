"""Replication throughput and lag (#17 part 1). Not a test:
`python bench/bench_replicate.py [--quick]`.

A primary repository is filled with committed units in the repository's layout — logical
backups (dump object + signed-manifest-shaped manifest and copy, with the stored sha256 they
record) and WAL files (object + index entry) — whose objects are random bytes: encrypted objects
are incompressible anyway, and the replicator reads no plaintext. moto's S3 server runs as its
own process (`moto_server`), so this process's peak RSS is replication's alone.

Measured, each against a bare copy of the same objects in the same run:
  1. file:// -> S3 (streamed, every copy read back and hashed)   vs boto3 upload_file
  2. S3 -> S3 on one endpoint (server-side CopyObject, read back) vs copy_object alone
  3. lag: WAL units appear on the primary at the physical bench's archiving rate while
     replicate passes run back to back; the WAL lag after each pass (max, median).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3  # noqa: E402

from bench.results import save_result  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.replica.run import replicate  # noqa: E402

# The physical bench's archiver caught up a post-load backlog at 3.3 segments/s; a 16 MiB segment
# is stored as ~4.3 MB (bench_wal_push: 240 MB -> 64.2 MB).
WAL_RATE = 3.3
WAL_STORED = 4_300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    raise SystemExit("moto_server did not start")


def _put(root: Path, key: str, data: bytes) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _put_random(root: Path, key: str, size: int) -> str:
    """A random object written in 1 MiB chunks (the bench's own memory stays flat); its sha256."""
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        for off in range(0, size, 1 << 20):
            chunk = os.urandom(min(1 << 20, size - off))
            h.update(chunk)
            fh.write(chunk)
    return h.hexdigest()


def add_backup(root: Path, i: int, size: int) -> int:
    bid = f"20261128T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}Z-logical-{i:06x}"
    sha = _put_random(root, f"backups/{bid}/dump.pgcustom", size)
    doc = {"format": "bvh-ops-manifest-v1", "manifest": {"backup_id": bid, "objects": [
        {"name": "dump.pgcustom", "stored_sha256": sha, "stored_size": size}]}, "signature": {}}
    raw = json.dumps(doc, indent=1).encode()
    _put(root, f"backups/{bid}/manifest.json.copy", raw)
    _put(root, f"backups/{bid}/manifest.json", raw)
    return size + 2 * len(raw)


def add_wal(root: Path, segno: int, size: int = WAL_STORED) -> int:
    name = f"00000001{segno >> 8:08X}{segno & 0xFF:08X}"
    sha = _put_random(root, f"wal/00000001/{name}", size)
    entry = json.dumps({"name": name, "stored_sha256": sha, "stored_size": size}).encode()
    _put(root, f"wal/00000001/{name}.json", entry)
    return size + len(entry)


def _settings(work: Path, primary: str, replica: str, endpoint: str, primary_endpoint: str | None = None) -> Settings:
    return Settings(repository=primary, s3_endpoint_url=primary_endpoint, replica_repository=replica,
                    replica_s3_endpoint_url=endpoint, state_dir=work / "state")


def _bucket(client, name: str) -> str:
    client.create_bucket(Bucket=name)
    return name


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a minute)")
    ap.add_argument("--workdir", default="/tmp/bvh-bench-replicate")
    args = ap.parse_args()
    backups, backup_mb, wal = (3, 8, 20) if args.quick else (6, 64, 100)
    lag_seconds = 10 if args.quick else 40
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    moto, url = _moto()
    try:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        primary = work / "primary"
        total = sum(add_backup(primary, i, backup_mb << 20) for i in range(backups))
        total += sum(add_wal(primary, s) for s in range(wal))
        files = [p for p in primary.rglob("*") if p.is_file()]
        result: dict = {"objects": len(files), "mb": round(total / 1e6, 1), "backups": backups,
                        "backup_mb": backup_mb, "wal_files": wal, "wal_stored_mb": WAL_STORED / 1e6}

        # 1. file:// -> S3: ours first (peak RSS is a high-water mark: boto3's upload_file runs
        # 10 threads with 8 MiB chunks and would hide ours), then the bare upload
        rb = _bucket(client, "replica-from-file")
        s = _settings(work, f"file://{primary}", f"s3://{rb}/dr", url)
        rep = replicate(s, datetime.now(UTC))
        assert rep.ok and rep.copied_objects == len(files), rep.to_json()
        ours_rss = _rss_mb()
        bare_bucket = _bucket(client, "bare-upload")
        t0 = time.monotonic()
        for p in files:
            client.upload_file(str(p), bare_bucket, p.relative_to(primary).as_posix())
        bare = time.monotonic() - t0
        result["file_to_s3"] = {"seconds": round(rep.seconds, 2), "mb_per_s": round(total / 1e6 / rep.seconds, 1),
                                "objects_per_s": round(len(files) / rep.seconds, 1),
                                "bare_upload_seconds": round(bare, 2), "ratio": round(rep.seconds / bare, 2),
                                "peak_rss_mb": ours_rss}
        t0 = time.monotonic()
        again = replicate(s, datetime.now(UTC))
        result["in_step_pass_seconds"] = round(time.monotonic() - t0, 3)
        assert again.copied_objects == 0

        # 2. S3 -> S3 on one endpoint: server-side; the bare copy is copy_object alone (no read-back)
        src_bucket = rb  # the replica just filled is the primary now
        bare_dst = _bucket(client, "bare-copy")
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=src_bucket)
                for o in page.get("Contents", [])]
        t0 = time.monotonic()
        for k in keys:
            client.copy_object(Bucket=bare_dst, Key=k, CopySource={"Bucket": src_bucket, "Key": k})
        bare_copy = time.monotonic() - t0
        t0 = time.monotonic()  # what verification costs on its own: reading every byte back
        for k in keys:
            body = client.get_object(Bucket=bare_dst, Key=k)["Body"]
            while body.read(1 << 20):
                pass
        read_back = time.monotonic() - t0
        rb2 = _bucket(client, "replica-server-side")
        s2 = _settings(work, f"s3://{src_bucket}/dr", f"s3://{rb2}/dr", url, primary_endpoint=url)
        rep2 = replicate(s2, datetime.now(UTC))
        assert rep2.ok and rep2.server_side == len(keys), rep2.to_json()
        result["s3_to_s3_server_side"] = {"seconds": round(rep2.seconds, 2),
                                          "mb_per_s": round(total / 1e6 / rep2.seconds, 1),
                                          "objects_per_s": round(len(keys) / rep2.seconds, 1),
                                          "bare_copy_object_seconds": round(bare_copy, 2),
                                          "bare_read_back_seconds": round(read_back, 2),
                                          "ratio": round(rep2.seconds / bare_copy, 2)}

        # 3. lag under WAL archiving at the physical bench's rate (file:// primary -> S3)
        stop = threading.Event()
        produced = []

        def archiver() -> None:
            segno = wal
            t_start = time.monotonic()
            while not stop.is_set():
                due = int((time.monotonic() - t_start) * WAL_RATE)
                while segno - wal < due:
                    add_wal(primary, segno)
                    produced.append(segno)
                    segno += 1
                time.sleep(0.02)

        thread = threading.Thread(target=archiver, daemon=True)
        thread.start()
        lags, passes = [], 0
        t_end = time.monotonic() + lag_seconds
        while time.monotonic() < t_end:
            r = replicate(s, datetime.now(UTC))
            passes += 1
            lags.append(r.lag_before.wal_seconds)
        stop.set()
        thread.join()
        final = replicate(s, datetime.now(UTC))
        result["lag_under_wal_rate"] = {"wal_rate_segments_per_s": WAL_RATE, "seconds": lag_seconds,
                                        "segments_archived": len(produced), "passes": passes,
                                        "wal_lag_max_s": round(max(lags), 1),
                                        "wal_lag_median_s": round(statistics.median(lags), 1),
                                        "caught_up_after": final.lag_after.objects == 0}
        result["peak_rss_mb_incl_bare_tools"] = _rss_mb()
        save_result("replicate" + ("_quick" if args.quick else ""), result)
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    main()
