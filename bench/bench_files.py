"""File-set snapshot throughput vs ``tar -cf - DIR | zstd -3 -T0`` of the same tree (and vs
``restic backup`` where installed), and the second run's cost on the unchanged tree. The tree:
N small config-like text files plus one incompressible and one compressible large file. Peak
RSS of this process (the snapshotter) is reported. Not a test:
``python bench/bench_files.py [--small 2000] [--large-mb 100] [--quick]`` (``--quick``: 300 small
files and two 10 MB files)."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.files.snapshot import take_snapshot  # noqa: E402
from bvh_ops.keys import write_keypair  # noqa: E402


def make_tree(root: Path, small: int, large_mb: int) -> int:
    root.mkdir(parents=True)
    total = 0
    for i in range(small):
        d = root / f"conf.d/{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        body = "".join(f"option_{j} = value-{i}-{j}  # comment line for file {i}\n" for j in range(i % 200 + 10))
        (d / f"site-{i}.conf").write_text(body)
        total += len(body)
    with open(root / "assets.bin", "wb") as fh:
        for _ in range(large_mb):
            fh.write(os.urandom(1 << 20))
    line = b'{"at":"2026-10-01T00:00:00Z","level":"info","event":"request.completed","path":"/api/draws"}\n'
    with open(root / "app.log", "wb") as fh:
        for _ in range(large_mb):
            fh.write(line * ((1 << 20) // len(line)))
    return total + 2 * large_mb * (1 << 20)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large-mb", type=int, default=100)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-files")
    ap.add_argument("--quick", action="store_true", help="300 small files and two 10 MB files")
    ap.add_argument("--label", default="", help="suffix of the result's name (e.g. before, after)")
    args = ap.parse_args()
    if args.quick:
        args.small, args.large_mb = 300, 10
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    tree = work / "tree"
    size = make_tree(tree, args.small, args.large_mb)
    time.sleep(0.2)   # a daily tree is not written the instant before its snapshot (see files/cache.py: racy files)
    pub, key = write_keypair(work / "keys")
    repo = work / "repo"
    repo.mkdir()
    settings = Settings(repository=f"file://{repo}", recipients=[pub], identity=key, state_dir=work / "state",
                        file_sets=[{"name": "bench", "class": "application", "paths": [str(tree)]}])
    runs = {}
    for name in ("first", "second"):
        t = time.monotonic()
        r = take_snapshot(settings, "bench")
        wall = time.monotonic() - t
        runs[name] = {"wall_s": round(wall, 2), "mb_per_s": round(r.bytes_in / wall / 1e6, 1), "entries": r.files,
                      "bytes_in": r.bytes_in, "bytes_stored": r.bytes_stored, "chunks_new": r.chunks_new,
                      "chunks_reused": r.chunks_reused,
                      "files_unchanged": getattr(r, "files_unchanged", None), "packs_new": getattr(r, "packs_new", None)}
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.monotonic()
    out = work / "tree.tar.zst"
    tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(work), "tree"], stdout=subprocess.PIPE)
    with open(out, "wb") as fh:
        subprocess.run(["zstd", "-3", "-T0", "-q", "-c"], stdin=tar.stdout, stdout=fh, check=True)
    tar.wait()
    tar_wall = time.monotonic() - t
    result = {"machine": machine(), "tree_bytes": size, "small_files": args.small, "large_mb": args.large_mb,
              "repository_bytes": du(repo), "snapshot": runs, "peak_rss_mib": round(rss_mib, 1),
              "tar_zstd": {"wall_s": round(tar_wall, 2), "mb_per_s": round(size / tar_wall / 1e6, 1),
                           "bytes": out.stat().st_size}}
    if shutil.which("restic"):
        env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=str(work / "restic"))
        subprocess.run(["restic", "init", "-q"], env=env, check=True)
        for name in ("first", "second"):
            t = time.monotonic()
            subprocess.run(["restic", "backup", "-q", str(tree)], env=env, check=True)
            result.setdefault("restic", {})[name] = {"wall_s": round(time.monotonic() - t, 2)}
        result["restic"]["repository_bytes"] = du(work / "restic")
    else:
        result["restic"] = "not installed"
    name = "files" + ("-quick" if args.quick else "") + (f"-{args.label}" if args.label else "")
    save_result(name, result)


if __name__ == "__main__":
    main()
