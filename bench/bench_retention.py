"""GFS retention (issue #17): the pure planner over seven years of backups, and
`bvh-ops retention --json` (the real CLI in a child process) over a file:// repository of
signed manifests, side by side with the bare cost of reading those manifests (`cat` of every
manifest.json). Wall time and peak RSS (ru_maxrss of the child).

Seven years at the runbook's cadence: a logical dump a day, a physical full a day and three
incrementals (every 6 h): 12,775 backups for the planner; the repository run holds the dumps
only (2,555 manifests; `--quick`: 365). Not a test: ``python bench/bench_retention.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.repository.gfs import Item, Policy, Verdict, plan_gfs  # noqa: E402

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def planner(days: int) -> dict:
    items = []
    for d in range(days):
        day = NOW - timedelta(days=d)
        items.append(Item(f"l{d}", day.replace(hour=2), "logical"))
        items.append(Item(f"f{d}", day.replace(hour=2, minute=30), "physical"))
        for h, n in ((8, 1), (14, 2), (20, 3)):
            items.append(Item(f"i{d}-{n}", day.replace(hour=h), "physical", parent_id=f"f{d}" if n == 1 else f"i{d}-{n - 1}"))
    t0 = time.perf_counter()
    decisions = plan_gfs(items, Policy(), now=NOW)
    seconds = time.perf_counter() - t0
    return {"items": len(items), "seconds": round(seconds, 4),
            "kept": sum(d.verdict is Verdict.KEEP for d in decisions),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def make_repo(root: Path, n: int) -> Path:
    from bvh_ops.keys import load_or_create_host_key
    from bvh_ops.repository.manifest import Manifest, sign_manifest

    repo, state = root / "repo", root / "state"
    key = load_or_create_host_key(state)
    for d in range(n):
        t = (NOW - timedelta(days=d)).replace(hour=2)
        bid = f"{t:%Y%m%dT%H%M%SZ}-logical-{d:06x}"
        m = Manifest(backup_id=bid, kind="logical", tool_version="bench", started_at=t.isoformat(),
                     finished_at=t.isoformat(), database="lottery", server_version="18", server_version_num=180000,
                     system_identifier="1", snapshot_id="s", dump_format="custom", compression="zstd-3", kem="x",
                     key_ids=(), host="bench")
        raw = sign_manifest(m, key)
        (repo / "backups" / bid).mkdir(parents=True)
        (repo / "backups" / bid / "manifest.json").write_bytes(raw)
        (repo / "backups" / bid / "manifest.json.copy").write_bytes(raw)
    return repo


def child(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(rss, before) / 1024, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default="/tmp/bvh-bench-retention")
    args = ap.parse_args()
    work = Path(args.workdir)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    days = 365 if args.quick else 7 * 365
    result = {"machine": machine(), "planner": planner(days)}
    repo = make_repo(work, days)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BVH_OPS_")}
    env.update(BVH_OPS_REPOSITORY=f"file://{repo}", BVH_OPS_STATE_DIR=str(work / "state"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    bare_s, bare_rss, _ = child(["sh", "-c", f"find {repo}/backups -name manifest.json -exec cat {{}} + | wc -c"], env)
    cli_s, cli_rss, out = child([sys.executable, "-m", "bvh_ops.cli", "retention", "--json"], env)
    start_s, _, _ = child([sys.executable, "-m", "bvh_ops.cli", "--help"], env)
    result["repository"] = {"manifests": days, "bare_cat_seconds": round(bare_s, 3),
                            "cli_seconds": round(cli_s, 3), "cli_startup_seconds": round(start_s, 3),
                            "cli_minus_startup_per_1000": round((cli_s - start_s) / days * 1000, 3),
                            "ratio_cli_to_bare": round(cli_s / bare_s, 1), "cli_peak_rss_mb": round(cli_rss, 1),
                            "kept": out.count('"action": "KEEP"')}
    save_result("retention", result)


if __name__ == "__main__":
    main()
