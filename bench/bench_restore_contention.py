"""What work beside a restore costs it (issue #19, goal 3): bare `pg_restore -j2` of the sample
into a fresh server made as the drill makes its scratch, alone and with two processes of other
work running meanwhile, each variant alternated with the others (--runs times, medians):

- ``cpu_group19``: pure CPU (a busy loop), in a session of its own whose autogroup is at nice 19
  (bvh_ops.priority.lower_group: what the drill's early reads now do);
- ``cpu_sched_idle``: the same loop at SCHED_IDLE but its session's autogroup left at 0 (what a
  per-thread priority alone gets under autogroups);
- ``memory_group19``: copying a 50 MB buffer over and over (memory bandwidth, no disk), autogroup 19;
- ``copy_group19``: psql reading the sample's largest tables as COPY text from a second server,
  that server and the readers all at autogroup nice 19 (the drill's read-back, minus the scratch).

Not a test: `python bench/bench_restore_contention.py [--scale 40] [--runs 3]`."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.demo.sample import load_sample  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster, prepare_server_user  # noqa: E402
from bvh_ops.pg.tools import embedded_bin_dir, pg_env  # noqa: E402

LOOP = "import time\nt = time.time()\nwhile time.time() - t < 900: pass"
MEMORY = ("import time, numpy as np\na = np.ones(50_000_000, dtype=np.uint8); b = np.empty_like(a)\n"
          "t = time.time()\nwhile time.time() - t < 900: np.copyto(b, a)")
VARIANTS = ("alone", "cpu_group19", "cpu_sched_idle", "memory_group19", "copy_group19")


def group(pid: int, nice: int) -> None:
    with open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-contention")
    args = ap.parse_args()
    if not Path("/proc/self/autogroup").exists():
        print("no autogroups on this kernel (CONFIG_SCHED_AUTOGROUP): nothing to compare", file=sys.stderr)
        sys.exit(2)
    work = Path(args.workdir)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    os.chmod(work, 0o755)
    prepare_server_user(work)
    source = EmbeddedCluster(work / "source")
    source.start()
    try:
        create_database(source.dsn(), "sample")
        load_sample(source.dsn("sample"), scale=args.scale)
        bin_dir, dump = embedded_bin_dir(), work / "sample.dump"
        subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-Z0", "-f", str(dump), "sample"],
                       env=pg_env(source.dsn("sample")), check=True)
        postmaster = int((source.data / "postmaster.pid").read_text().split()[0])
        group(postmaster, 19)  # the reading server: its whole session at the lowest share
        reads = (f"while true; do for t in transactions tickets audit_log; do "
                 f"'{bin_dir}/psql' -qX -c \"COPY $t TO STDOUT\" >/dev/null; done; done")

        def others(variant: str) -> list[subprocess.Popen]:
            if variant == "alone":
                return []
            if variant == "copy_group19":
                procs = [subprocess.Popen(["sh", "-c", reads], env=pg_env(source.dsn("sample")),
                                          start_new_session=True) for _ in range(2)]
            else:
                code = MEMORY if variant.startswith("memory") else LOOP
                procs = [subprocess.Popen([sys.executable, "-c", code], start_new_session=True) for _ in range(2)]
            try:
                for p in procs:
                    if variant == "cpu_sched_idle":
                        os.sched_setscheduler(p.pid, os.SCHED_IDLE, os.sched_param(0))
                    else:
                        group(p.pid, 19)
            except BaseException:  # (not root: a second autogroup change within 0.1 s is refused)
                for p in procs:
                    os.killpg(p.pid, 9)
                    p.wait()
                raise
            return procs

        seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(args.runs):
            for variant in VARIANTS:
                target = EmbeddedCluster(work / f"target-{variant}-{i}")
                target.start()
                procs = []
                try:
                    create_database(target.dsn(), "restored")
                    procs = others(variant)
                    t0 = time.monotonic()
                    subprocess.run([str(bin_dir / "pg_restore"), "-j2", "-d", "restored", str(dump)],
                                   env=pg_env(target.dsn("restored")), check=True)
                    seconds[variant].append(round(time.monotonic() - t0, 2))
                finally:
                    for p in procs:
                        os.killpg(p.pid, 9)
                        p.wait()
                    target.destroy()
                print(variant, i, seconds[variant][-1], flush=True)
        alone = statistics.median(seconds["alone"])
        save_result("restore_contention", {
            "machine": machine(), "scale": args.scale, "runs": args.runs, "dump_bytes": dump.stat().st_size,
            "seconds": seconds, "medians": {v: statistics.median(s) for v, s in seconds.items()},
            "over_alone": {v: round(statistics.median(s) / alone, 3) for v, s in seconds.items()}})
    finally:
        source.destroy()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
