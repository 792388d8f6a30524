"""File-set snapshot throughput vs ``tar -cf - DIR | zstd -3 -T0`` of the same tree (and vs
``restic backup`` where installed), and the second run's cost on the unchanged tree. The tree:
N small config-like text files plus one incompressible and one compressible large file. Peak
RSS of this process (the snapshotter) is reported.

Then the restore of the whole tree into an empty directory, as an operator runs each tool,
alternated ``--runs`` times (medians): ``bvh-ops files restore latest --target-dir D`` (the CLI:
decrypt, decompress, verify every chunk, write, set modes and mtimes), ``zstd -d | tar -x`` of
the tar.zst, and ``restic restore latest --target D``; wall time, peak RSS of each, and every
restored tree compared byte for byte with the original (a restore that differs fails the bench).
Not a test: ``python bench/bench_files.py [--small 2000] [--large-mb 100] [--runs 3] [--quick]``
(``--quick``: 300 small files and two 10 MB files)."""

from __future__ import annotations

import argparse
import filecmp
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


def same_tree(a: Path, b: Path) -> bool:
    """Every file of ``a`` in ``b`` with the same bytes, and nothing more (recursively)."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def timed_child(cmd: list[str], env: dict | None = None) -> dict:
    """Wall seconds and peak RSS (MiB) of ``cmd`` run through GNU time, which reports its child's."""
    t = time.monotonic()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return {"wall_s": round(wall, 3), "rss_mib": round(int(done.stderr.strip().splitlines()[-1]) / 1024, 1)}


def med(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def restores(work: Path, tree: Path, tarball: Path, settings_env: dict, restic_env: dict | None, runs: int) -> dict:
    """The whole tree restored by each tool into a fresh directory, alternated; each restored
    tree checked against the original."""
    tools = {
        "ours": lambda d: [str(Path(sys.executable).with_name("bvh-ops")), "files", "restore", "latest",
                           "--target-dir", str(d)],
        "tar_zstd": lambda d: ["bash", "-c", f'mkdir -p "{d}" && zstd -d -q -c "{tarball}" | tar -x -C "{d}"'],
    }
    if restic_env is not None:
        tools["restic"] = lambda d: ["restic", "restore", "-q", "latest", "--target", str(d)]
    rows: dict[str, list] = {name: [] for name in tools}
    for i in range(runs):
        order = list(tools) if i % 2 == 0 else list(reversed(tools))
        for name in order:
            dest = work / f"restore-{name}-{i}"
            env = settings_env if name == "ours" else restic_env if name == "restic" else None
            row = timed_child(tools[name](dest), env)
            # Where each tool puts the tree: ours and restic under its absolute path, tar its member name.
            root = dest / tree.relative_to("/") if name != "tar_zstd" else dest / tree.name
            if not same_tree(tree, root):
                raise SystemExit(f"{name}: the restored tree differs from the original ({root})")
            rows[name].append(row)
    # Removed only now: ext4 avoids reusing recently deleted inodes, so files created just after
    # a tree's removal cost several times more (perf: recently_deleted in ext4_create).
    for dest in work.glob("restore-*"):
        shutil.rmtree(dest)
    out = {name: {"wall_s": med([r["wall_s"] for r in rs]), "all": [r["wall_s"] for r in rs],
                  "rss_mib": max(r["rss_mib"] for r in rs)} for name, rs in rows.items()}
    for name in list(out):
        if name != "ours":
            out[f"ours_over_{name}"] = round(out["ours"]["wall_s"] / out[name]["wall_s"], 2)
    out["load_average"] = os.getloadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large-mb", type=int, default=100)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-files")
    ap.add_argument("--quick", action="store_true", help="300 small files and two 10 MB files")
    ap.add_argument("--runs", type=int, default=3, help="alternated restores of each tool")
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
        env = None
        result["restic"] = "not installed"
    ours_env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")} | {
        "BVH_OPS_REPOSITORY": f"file://{repo}", "BVH_OPS_IDENTITY": str(key), "BVH_OPS_STATE_DIR": str(work / "state"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result["restore"] = restores(work, tree, out, ours_env, env, args.runs)
    name = "files" + ("-quick" if args.quick else "") + (f"-{args.label}" if args.label else "")
    save_result(name, result)


if __name__ == "__main__":
    main()
