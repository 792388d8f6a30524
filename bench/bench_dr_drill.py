"""DR drill on the sample database: RTO and seconds per stage, the restore stage against bare
`pg_restore -j2` of an unencrypted dump of the same data (alternated, --runs times, medians),
and the checks stage against the restore stage (issue #19, goal 3). Not a test: run
`python bench/bench_dr_drill.py [--scale 120] [--runs 3]`; --quick: scale 5, no physical drill."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bvh-bench-prefect-"))

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import fresh_workdir, save_result  # noqa: E402
from bvh_ops.demo.sample import LOTTERY_INVARIANTS, Workload, load_sample
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import (  # noqa: E402
    EmbeddedCluster,
    archiving_conf,
    local_archive_config,
    prepare_server_user,
)
from bvh_ops.pg.tools import embedded_bin_dir, pg_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=120)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-drill")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-physical", action="store_true")
    ap.add_argument("--no-late", action="store_true",
                    help="skip the drills whose checks all wait for the restore's end (the 'before' of #19 goal 3)")
    ap.add_argument("--early-policies", default="nice",
                    help="CPU priority of the reads during the restore, comma-separated, each a drill variant "
                         "alternated with the others (bvh_ops.priority: nice, idle = SCHED_IDLE, normal); "
                         "the first is the main result")
    ap.add_argument("--pitr-early", action="store_true",
                    help="also drills with drill_early_checks = pitr (the default auto on 2 cores: the "
                         "append-only tables' PITR side read during the restore where it was not summed from "
                         "the dump — usually none), alternated with the others")
    args = ap.parse_args()
    policies = args.early_policies.split(",")
    if args.quick:
        args.scale, args.no_physical = 5, True
    work, keys = fresh_workdir(args.workdir)
    # The cluster archives through bvh-ops-wal, so the physical drill can recover from WAL.
    prepare_server_user(work)  # a fresh machine: the OS user the files below are given to
    cfg = local_archive_config(work)
    cluster = EmbeddedCluster(work / "pg", extra_conf={**archiving_conf(cfg), "shared_buffers": "'512MB'",
                                                       "max_wal_size": "'4GB'"})
    cluster.start()
    db = "drillbench"
    t0 = time.monotonic()
    create_database(cluster.dsn(), db)
    load_sample(cluster.dsn(db), scale=args.scale)
    w = Workload(cluster.dsn(db), rate=50).start()
    time.sleep(2)
    w.stop()
    load_s = time.monotonic() - t0
    import psycopg

    with psycopg.connect(cluster.dsn(db)) as conn:
        db_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    create_database(cluster.dsn(), "bvh_ops")
    os.environ.update({
        "BVH_OPS_DATABASE_URL": cluster.dsn(db), "BVH_OPS_REPOSITORY": f"file://{work / 'repo'}",
        "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_IDENTITY": str(keys[1]),
        "BVH_OPS_STATE_DIR": str(work / "state"), "BVH_OPS_OPS_DATABASE_URL": cluster.dsn("bvh_ops"),
        "BVH_OPS_INVARIANTS": json.dumps([{"name": n, "sql": q} for n, q in LOTTERY_INVARIANTS]),
        # the early reads measured whatever the cores (auto leaves them off on 2); the "checks
        # after the restore" variant switches them off itself
        "BVH_OPS_DRILL_EARLY_CHECKS": "on",
    })
    from bvh_ops.config import load_settings
    from bvh_ops.logical.backup import run_logical_backup

    manifest = run_logical_backup(load_settings()).manifest
    from flows.dr_drill import DrillFailed, dr_drill

    # Bare: an unencrypted custom dump of the same database, restored with pg_restore -j2
    # into a fresh database on the same server, alternated with the drills.
    bin_dir = embedded_bin_dir()
    dump = work / "bare.dump"
    env = pg_env(cluster.dsn(db))
    subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-Z0", "--no-sync", "-f", str(dump), db], env=env, check=True)
    reports, bare_runs, late_reports = [], [], []
    other_reports: dict[str, list] = {p: [] for p in policies[1:]}
    pitr_reports: list = []
    cpu: dict[str, list] = {}

    machine_cpu = MachineCpu().start()
    stage_cpu: dict[str, list] = {}

    def drill(variant, into):
        with cpu_seconds(cpu.setdefault(variant, []), cluster.data, work / "state" / "drills"):
            try:
                into.append(dr_drill(backup=manifest.backup_id))
            except DrillFailed as exc:
                into.append(exc.report)
        stage_cpu.setdefault(variant, []).append(machine_cpu.stages(into[-1]["stages"], ("restore", "checks")))

    for i in range(args.runs):
        with early_policy(policies[0]):
            drill(f"early_{policies[0]}", reports)
        for policy in policies[1:]:
            with early_policy(policy):
                drill(f"early_{policy}", other_reports[policy])
        if not args.no_late:
            with checks_after_restore():
                drill("checks_after_restore", late_reports)
        if args.pitr_early:
            os.environ["BVH_OPS_DRILL_EARLY_CHECKS"] = "pitr"
            try:
                drill("early_pitr_only", pitr_reports)
            finally:
                os.environ["BVH_OPS_DRILL_EARLY_CHECKS"] = "on"
        # Into a fresh server made as the drill makes its scratch (not the bench's own, whose
        # archive_command would push every segment of the restore's WAL meanwhile: until the
        # twelfth #19 session that slowed bare pg_restore by 15-35 % and flattered the ratio).
        bare = EmbeddedCluster(work / f"bare-{i}")
        bare.start()
        try:
            create_database(bare.dsn(), "bare_restore")
            t1 = time.monotonic()
            with cpu_seconds(cpu.setdefault("bare", []), bare.data, work / "state" / "drills"):
                subprocess.run([str(bin_dir / "pg_restore"), "-j2", "--no-owner", "-d", "bare_restore", str(dump)],
                               env=pg_env(bare.dsn("bare_restore")), check=True)
            bare_runs.append(time.monotonic() - t1)
        finally:
            bare.destroy()
    dump.unlink()
    stages = _stages(reports)
    bare_restore_s = statistics.median(bare_runs)
    late = _late(late_reports, bare_restore_s) if late_reports else None
    machine_cpu.stop()
    extra = {"early_policy": policies[0], "cpu_seconds": cpu, "stage_cpu": stage_cpu,
             **{f"early_{p}": _late(r, bare_restore_s) for p, r in other_reports.items()},
             **({"early_pitr_only": _late(pitr_reports, bare_restore_s)} if pitr_reports else {})}
    if args.no_physical:
        cluster.stop()
        path = save_result("dr_drill" + ("_quick" if args.quick else ""), {**_result(
            args, db_bytes, load_s, manifest, reports, stages, bare_runs, bare_restore_s, None, late=late), **extra})
        chart(path)
        return

    # Physical: a full, writes, an incremental, writes, everything archived; then a physical
    # drill recovering to the end of the archive.
    from bench.bench_physical import wait_archived
    from bvh_ops.physical.backup import run_physical_backup

    wait_archived(cluster)
    settings = load_settings()
    run_physical_backup(settings, "full")
    w = Workload(cluster.dsn(db), rate=50).start()
    time.sleep(2)
    run_physical_backup(settings, "incremental")
    time.sleep(2)
    w.stop()
    wait_archived(cluster)
    try:
        preport = dr_drill(mode="physical")
    except DrillFailed as exc:
        preport = exc.report
    pstages = {s["name"]: s["seconds"] for s in preport["stages"]}

    cluster.stop()
    chart(save_result("dr_drill", {**_result(args, db_bytes, load_s, manifest, reports, stages, bare_runs,
                                             bare_restore_s, preport, pstages, late=late), **extra}))


def chart(result_path: Path) -> Path:
    """Goal 3 at a glance, next to the result (``dr_drill.png``): bare pg_restore -j2 and the two
    drill variants, restore and checks stacked (medians), the restore bound (1.15 x bare) and the
    checks bound (30 % of the restore) marked, each stage's share of the cores written on it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    r = json.loads(result_path.read_text())
    bare = r["bare_pg_restore_j2_seconds"]
    late = r.get("checks_after_restore") or {}

    def share(variant: str, stage: str) -> str:
        runs = [x[stage]["share_of_cores"] for x in r.get("stage_cpu", {}).get(variant, []) if stage in x]
        return f", {statistics.median(runs):.0%} of the cores busy" if runs else ""

    rows = [("bare pg_restore -j2", bare, 0.0, "", "")]
    if late:
        rows.append(("drill, checks after the restore (off)", late["stages"]["restore"], late["stages"]["checks"],
                     share("checks_after_restore", "restore"), share("checks_after_restore", "checks")))
    if pitr := r.get("early_pitr_only"):
        rows.append(("drill, pitr (today's auto on 2 cores)", pitr["stages"]["restore"], pitr["stages"]["checks"],
                     share("early_pitr_only", "restore"), share("early_pitr_only", "checks")))
    rows.append((f"drill, early reads ({r.get('early_policy', 'on')})", r["stages"]["restore"], r["stages"]["checks"],
                 share(f"early_{r.get('early_policy')}", "restore"), share(f"early_{r.get('early_policy')}", "checks")))
    fig, ax = plt.subplots(figsize=(10.5, 1.2 + 0.8 * len(rows)))
    for i, (_name, restore, checks, rs, cs) in enumerate(rows):
        y = len(rows) - 1 - i
        ax.barh(y, restore, color="#4c78a8")
        ax.text(restore / 2, y, f"restore {restore:.1f} s{rs}", ha="center", va="center", color="white", fontsize=8)
        if checks:
            ax.barh(y, checks, left=restore, color="#f58518")
            ax.plot([1.3 * restore] * 2, [y - 0.42, y + 0.42], color="#b00000", linewidth=2)  # checks bound
            ax.text(max(restore + checks, 1.3 * restore) + 0.02 * bare, y, f"checks {checks:.1f} s ({checks / restore:.0%} of the restore){cs}",
                    va="center", fontsize=8)
    ax.axvline(1.15 * bare, color="black", linestyle="--", linewidth=1)
    ax.text(0.01 * bare, -0.75, "dashed: the restore bound, 1.15 x bare; red: the checks bound, 30 % of the restore",
            fontsize=8)
    ax.set_yticks(range(len(rows)), [row[0] for row in reversed(rows)], fontsize=8)
    ax.set_xlabel("seconds (medians)")
    ax.set_xlim(0, max(row[1] * 1.3 + row[2] for row in rows) * 1.8)
    ax.set_ylim(-0.95, len(rows) - 0.5)
    ax.set_title(f"DR drill restore stage vs bare pg_restore -j2: {r['database_bytes'] / 1e9:.2f} GB sample, "
                 f"{r['runs']} runs, {r['machine']['cores']} cores", fontsize=9)
    fig.tight_layout()
    out = result_path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@contextmanager
def checks_after_restore():
    """The drill as before #19 goal 3's second half: nothing read while the restore runs, every
    check after it (the early reads never start, so the checks read every table themselves)."""
    from checks.drill_early import EarlyChecks

    saved = EarlyChecks.begin, EarlyChecks.loaded
    EarlyChecks.begin = lambda self: self
    EarlyChecks.loaded = lambda self, schema, table: None
    try:
        yield
    finally:
        EarlyChecks.begin, EarlyChecks.loaded = saved


@contextmanager
def early_policy(policy):
    """The drill's reads during the restore at this CPU priority (bvh_ops.priority.POLICY)."""
    from bvh_ops import priority

    saved, priority.POLICY = priority.POLICY, policy
    try:
        yield
    finally:
        priority.POLICY = saved


@contextmanager
def cpu_seconds(into, data_dir, scratch_dirs):
    """CPU seconds while the block runs: ``self``, this process with its reaped children (our
    threads, psql, pg_restore); ``servers``, the bench's server (``data_dir``) and any scratch
    server started meanwhile under ``scratch_dirs`` (each postmaster with its backends, sampled
    every 0.2 s until it stops) — not other people's work on a shared machine."""
    import threading

    servers: dict[Path, float] = {}
    before = _server_cpu(Path(data_dir))
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            for pid_file in Path(scratch_dirs).glob("*/data/postmaster.pid"):
                servers[pid_file.parent] = max(servers.get(pid_file.parent, 0.0), _server_cpu(pid_file.parent))

    sampler = threading.Thread(target=sample, daemon=True)
    t, w = os.times(), time.monotonic()
    sampler.start()
    yield
    stop.set()
    sampler.join()
    t2 = os.times()
    into.append({"self": round(t2.user + t2.system + t2.children_user + t2.children_system
                               - t.user - t.system - t.children_user - t.children_system, 2),
                 "servers": round(_server_cpu(Path(data_dir)) - before + sum(servers.values()), 2),
                 "wall": round(time.monotonic() - w, 2), "load": round(os.getloadavg()[0], 2)})


class MachineCpu:
    """The whole machine's busy core-seconds (/proc/stat: all but idle and iowait), sampled every
    50 ms, so that a drill stage's share of two cores can be read off its timeline (the drill's
    report gives each stage's start and length). Counts everything running here: meant for an
    otherwise idle machine."""

    def __init__(self) -> None:
        import threading

        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), self._busy()))
            if self._stop.wait(0.05):
                return

    def start(self) -> MachineCpu:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _at(self, t: float) -> float:
        import bisect

        i = bisect.bisect_left(self.samples, (t, float("-inf")))
        if i <= 0:
            return self.samples[0][1]
        if i >= len(self.samples):
            return self.samples[-1][1]
        (t0, b0), (t1, b1) = self.samples[i - 1], self.samples[i]
        return b0 + (b1 - b0) * (t - t0) / ((t1 - t0) or 1)

    def stages(self, stages: list[dict], names: tuple[str, ...]) -> dict:
        """Per named stage: wall seconds, busy core-seconds and the share of all cores busy."""
        from datetime import datetime

        out = {}
        for s in stages:
            if s["name"] in names and s.get("started_at"):
                start = datetime.fromisoformat(s["started_at"]).timestamp()
                busy = self._at(start + s["seconds"]) - self._at(start)
                out[s["name"]] = {"seconds": s["seconds"], "busy_core_seconds": round(busy, 2),
                                  "share_of_cores": round(busy / ((os.cpu_count() or 1) * s["seconds"] or 1), 2)}
        return out


def _server_cpu(data_dir: Path) -> float:
    """A running server's CPU seconds so far: its postmaster's own and reaped children's, and
    its live children's (0 once it has stopped)."""
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        if int(entry) == postmaster:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _stages(reports):
    names = [s["name"] for s in reports[-1]["stages"]]
    return {n: statistics.median([next(s["seconds"] for s in r["stages"] if s["name"] == n) for r in reports])
            for n in names}


def _late(reports, bare_restore_s):
    stages = _stages(reports)
    return {"stages": {k: round(v, 2) for k, v in stages.items()},
            "restore_all": [next(s["seconds"] for s in r["stages"] if s["name"] == "restore") for r in reports],
            "checks_all": [next(s["seconds"] for s in r["stages"] if s["name"] == "checks") for r in reports],
            "rto_seconds": [r["rto_seconds"] for r in reports], "drill_passed": [r["passed"] for r in reports],
            "restore_ratio": round(stages["restore"] / bare_restore_s, 3), "read_early": [_read_early(r) for r in reports],
            "checks_over_restore": round(stages["checks"] / stages["restore"], 3),
            "fetch_verify_all": [next(s["seconds"] for s in r["stages"] if s["name"] == "fetch_verify") for r in reports],
            "pitr_detail": [next(c["detail"] for c in r["checks"] if c["name"] == "pitr_append_only") for r in reports],
            "failed_checks": [c for r in reports for c in r["checks"] if c["status"] != "passed"]}


def _read_early(report):
    """How many tables the drill read while the restore ran (from its fingerprint check)."""
    import re

    detail = next(c["detail"] for c in report["checks"] if c["name"] == "logical_fingerprints")
    found = re.search(r"(\d+) read while the restore ran", detail)
    return int(found.group(1)) if found else 0


def _result(args, db_bytes, load_s, manifest, reports, stages, bare_runs, bare_restore_s, preport, pstages=None,
            late=None):
    report = reports[-1]
    result = {
        "machine": machine(), "load_average": os.getloadavg(), "scale": args.scale, "runs": args.runs,
        "database_bytes": db_bytes, "load_seconds": round(load_s, 1),
        "dump_bytes": manifest.bytes_in, "stored_bytes": manifest.bytes_stored,
        "drill_passed": [r["passed"] for r in reports], "rto_seconds": [r["rto_seconds"] for r in reports],
        "rpo_seconds": report["rpo_seconds"], "stages": {k: round(v, 2) for k, v in stages.items()},
        "restore_all": [next(s["seconds"] for s in r["stages"] if s["name"] == "restore") for r in reports],
        "checks_all": [next(s["seconds"] for s in r["stages"] if s["name"] == "checks") for r in reports],
        "bare_pg_restore_j2_seconds": round(bare_restore_s, 2), "bare_all": [round(x, 2) for x in bare_runs],
        "restore_ratio": round(stages.get("restore", 0) / bare_restore_s, 3),
        "checks_over_restore": round(stages.get("checks", 0) / stages["restore"], 3) if stages.get("restore") else None,
        "failed_checks": [c for c in report["checks"] if c["status"] != "passed"],
        "fingerprints_detail": next(c["detail"] for c in report["checks"] if c["name"] == "logical_fingerprints"),
        "pitr_detail": next(c["detail"] for c in report["checks"] if c["name"] == "pitr_append_only"),
        "read_early": [_read_early(r) for r in reports],
    }
    if late is not None:
        result["checks_after_restore"] = late
    if preport is not None:
        result["physical"] = {"passed": preport["passed"], "rto_seconds": preport["rto_seconds"],
                              "rpo_seconds": preport["rpo_seconds"], "stages": pstages,
                              "failed_checks": [c for c in preport["checks"] if c["status"] != "passed"]}
    return result


if __name__ == "__main__":
    main()
