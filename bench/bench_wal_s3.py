"""S3 requests per archived WAL segment: the one-off push (`bvh-ops wal-push`, and `bvh-ops-wal
push` for a file PostgreSQL has not marked ready) against the pusher that archive_command uses
(bvh_ops.wal.pusher), into a real S3 API (moto's server on 127.0.0.1). The requests are
counted at the boto3 client of the store (an event hook: the requests still go over HTTP to
the server). The point is the fence check: the one-off push lists ``fence/`` for every file,
the pusher once per FENCE_RECHECK_SECONDS.

Segments are synthetic 16 MiB files with a valid first page header (half random, half zero).
Not a test: `python bench/bench_wal_s3.py [--segments 24]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results import save_result  # noqa: E402

SEG = 16 << 20


def segment(segno: int, sysid: int = 7) -> bytes:
    head = struct.pack("<HHIQI4xQII", 0xD118, 0x0002, 1, segno * SEG, 0, sysid, SEG, 8192)
    return head + os.urandom(SEG // 2 - len(head)) + bytes(SEG // 2)


def instrument(counts: Counter, lists: list[float]) -> None:
    """Count every S3 request of every store the code under measurement opens, by operation,
    and time the fence listings."""
    from bvh_ops.storage import s3

    original = s3.S3Store.__init__
    started: dict[int, float] = {}

    def before(model, **_):
        counts[model.name] += 1
        if model.name == "ListObjectsV2":
            started[id(model)] = time.perf_counter()

    def after(model, **_):
        if model.name == "ListObjectsV2" and id(model) in started:
            lists.append(time.perf_counter() - started.pop(id(model)))

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.client.meta.events.register("before-call.s3", before)
        self.client.meta.events.register("after-call.s3", after)

    s3.S3Store.__init__ = init


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=24)
    args = ap.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    from bvh_ops.config import load_settings
    from bvh_ops.keys import write_keypair
    from bvh_ops.pg.cluster import free_port
    from bvh_ops.wal import pusher
    from bvh_ops.wal.store import wal_push

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing-secret",
                      AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="walbench")
    counts: Counter = Counter()
    lists: list[float] = []
    instrument(counts, lists)
    result: dict = {"segments": args.segments}
    try:
        with tempfile.TemporaryDirectory(prefix="bvh-wal-s3-") as tmp:
            work = Path(tmp)
            pub, _ = write_keypair(work / "keys")
            for label in ("one_off", "pusher"):
                wal_dir = work / label / "pg_wal"
                (wal_dir / "archive_status").mkdir(parents=True)
                names = [f"00000001000000000000{i:04X}" for i in range(0x10, 0x10 + args.segments)]
                for i, n in enumerate(names):
                    (wal_dir / n).write_bytes(segment(0x10 + i))
                os.environ.update(BVH_OPS_REPOSITORY=f"s3://walbench/{label}", BVH_OPS_S3_ENDPOINT_URL=endpoint,
                                  BVH_OPS_RECIPIENTS=str(pub), BVH_OPS_STATE_DIR=str(work / label / "state"))
                counts.clear()
                lists.clear()
                t0 = time.monotonic()
                if label == "one_off":
                    settings = load_settings()
                    for n in names:
                        wal_push(settings, str(wal_dir / n))
                else:
                    for n in names:
                        (wal_dir / "archive_status" / f"{n}.ready").touch()
                    pusher.IDLE_EXIT = 0.0  # leave as soon as everything ready is archived
                    d = pusher.spool_dir(str(work / label / "state" / "archive-spool"), str(wal_dir))
                    assert pusher.run(d, str(wal_dir), names[0]) == 0
                    assert all(pusher.verdict(d, n, pusher.config_ident()) for n in names)
                seconds = time.monotonic() - t0
                result[label] = {"seconds": round(seconds, 2),
                                 "requests_per_segment": {k: round(v / len(names), 2) for k, v in sorted(counts.items())},
                                 "fence_lists": counts["ListObjectsV2"],
                                 "list_ms_median": round(statistics.median(lists) * 1000, 1) if lists else None}
                print(label, result[label], flush=True)
    finally:
        server.stop()
    save_result("wal_s3", {"load_average": os.getloadavg(), "result": result})


if __name__ == "__main__":
    main()
