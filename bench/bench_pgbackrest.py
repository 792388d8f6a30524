"""The physical side against pgBackRest and the bare tool, in one run, on one Debian PostgreSQL 15
cluster (issue #19, goal 4).

One cluster (Debian's 15 binaries, its own port and data directory; the system cluster on 5432 is
not touched), pgbench data, ``archive_command`` feeding both archives (``bvh-ops-wal push`` and
``pgbackrest archive-push``, async), a local pgBackRest repository (zst 3, process-max 2,
aes-256-cbc; the passphrase in its 0600 config file, never on argv). Alternated (each round
starts one tool later; each tool on a quiet archiver), medians:

    full:     bare        pg_basebackup -D - -Ft -X fetch --checkpoint=fast | zstd -3 -T2 > file
              pgBackRest  pgbackrest --stanza=bench --type=full backup   (as the server's OS user)
              ours        bvh-ops backup --kind full --json  (the CLI, the flow and its checks,
                          against a running `prefect server`)
    pitr:     ours        bvh-ops restore latest --target-dir D --to-time T --start
              pgBackRest  pgbackrest restore --type=time --target=T --target-action=promote, then
                          pg_ctl start and wait until promoted
    wal:      N real segments of this cluster, pushed one after another as PostgreSQL's archiver
              does: bvh-ops-wal push (with the default sha256 and with wal_digest = blake3,
              alternated) vs pgbackrest archive-push (archive-async, process-max 2);
              wall time, and the CPU of every process each left running (bench/cputime.py);
              with --wal-interval S (a low WAL rate, as archive_timeout makes it) each segment is
              marked ready only S seconds after the previous one was marked, then pushed

pgBackRest is not installed by the bench: where it is absent its rows are skipped (apt-get install
pgbackrest). Not a test: `python bench/bench_pgbackrest.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from bench.bench_daily_backup import flow_phases, machine, med, start_prefect_server, timed_cpu  # noqa: E402
from bench.bench_physical import mb, wait_archived  # noqa: E402
from bench.results import fresh_workdir, save_result  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import (  # noqa: E402
    PG_OS_USER,
    EmbeddedCluster,
    archiving_conf,
    chown_to_server,
    chown_tree_to_server,
    free_port,
    local_archive_config,
    prepare_server_user,
    wal_command,
)
from bvh_ops.pg.tools import pg_env  # noqa: E402

BIN15 = Path("/usr/lib/postgresql/15/bin")
PGBACKREST = shutil.which("pgbackrest")
SEG = 16 * 2**20
AS_SERVER = ["runuser", "-u", PG_OS_USER, "--"]  # the OS user our clusters run as


def pgbackrest_conf(work: Path, cluster: EmbeddedCluster, sock: Path) -> Path:
    """pgBackRest's config: local repository, zst 3, process-max 2, aes-256-cbc (the passphrase
    here, mode 0600, owned by the server's OS user), async archive-push."""
    for sub in ("pgbr-repo", "pgbr-spool", "pgbr-lock", "pgbr-log"):
        (work / sub).mkdir(exist_ok=True)
        chown_to_server(work / sub)
    conf = work / "pgbackrest.conf"
    conf.write_text(
        "[global]\n"
        f"repo1-path={work / 'pgbr-repo'}\n"
        "repo1-retention-full=100\n"
        "repo1-cipher-type=aes-256-cbc\n"
        f"repo1-cipher-pass={secrets.token_urlsafe(32)}\n"
        "compress-type=zst\ncompress-level=3\nprocess-max=2\n"
        "start-fast=y\narchive-async=y\n"
        f"spool-path={work / 'pgbr-spool'}\nlock-path={work / 'pgbr-lock'}\nlog-path={work / 'pgbr-log'}\n"
        "log-level-console=warn\nlog-level-file=off\n"
        "[bench]\n"
        f"pg1-path={cluster.data}\npg1-port={cluster.port}\npg1-socket-path={sock}\npg1-user=postgres\n")
    conf.chmod(0o600)
    chown_to_server(conf)
    return conf


def pgbr(conf: Path, *args: str) -> list[str]:
    return [*AS_SERVER, PGBACKREST, f"--config={conf}", "--stanza=bench", *args]


def make_cluster(work: Path, with_pgbackrest: bool) -> tuple[EmbeddedCluster, Path | None]:
    """A PostgreSQL 15 cluster archiving into ours (and pgBackRest's, when installed), with a
    Unix socket for pgBackRest (peer authentication: the server's OS user as postgres)."""
    prepare_server_user(work)  # a fresh machine: the OS user the files below are given to
    cfg = local_archive_config(work)
    conf = archiving_conf(cfg)
    conf.pop("summarize_wal")  # PostgreSQL 17+
    conf.update({"shared_buffers": "'512MB'", "max_wal_size": "'4GB'", "wal_keep_size": "'8GB'"})
    cluster = EmbeddedCluster(work / "pg", extra_conf=conf, binaries=BIN15)
    cluster.init()
    sock = work / "sock"
    sock.mkdir(exist_ok=True)
    chown_to_server(sock)
    pgbr_conf = None
    if with_pgbackrest:
        pgbr_conf = pgbackrest_conf(work, cluster, sock)
        command = conf["archive_command"].rstrip("'") + f" && {PGBACKREST} --config={pgbr_conf} " \
            "--stanza=bench archive-push %p'"
        # postgresql.conf is ours (harden() keeps its socket off); the auto.conf wins over it.
        with open(cluster.data / "postgresql.auto.conf", "a") as fh:
            fh.write(f"archive_command = {command}\nunix_socket_directories = '{sock}'\n")
        hba = cluster.data / "pg_hba.conf"
        hba.write_text("local all postgres peer map=bench\n" + hba.read_text())
        (cluster.data / "pg_ident.conf").write_text(f"bench {PG_OS_USER} postgres\n")
    cluster.start()
    if pgbr_conf:
        subprocess.run(pgbr(pgbr_conf, "stanza-create"), check=True)
    return cluster, pgbr_conf


def backups(cluster, work, env_cli, pgbr_conf, runs, variants: dict[str, dict[str, str]] | None = None) -> dict:
    """``variants``: more runs of ours, each with these settings added to its environment
    (``--variant``), alternated with the others in every round: an A/B in the same run."""
    penv = pg_env(cluster.dsn())
    bb = BIN15 / "pg_basebackup"
    subprocess.run(["bash", "-c", f'"{bb}" -D - -Ft -X fetch --checkpoint=fast > /dev/null'], env=penv, check=True)
    bare_file = work / "bare-full.tar.zst"
    bare_cmd = ["bash", "-c", f'set -o pipefail; "{bb}" -D - -Ft -X fetch --checkpoint=fast --no-sync '
                f'| zstd -3 -T2 -q > "{bare_file}"']
    # From the checkout on PYTHONPATH: `python -m` puts the working directory first on sys.path, so
    # a variant's PYTHONPATH=<another checkout> would otherwise still run this directory's code.
    ours_cmd = ["bash", "-c", f'cd "${{PYTHONPATH%%:*}}" && "{sys.executable}" -m bvh_ops.cli backup --kind full '
                f'--json > "{work}/ours.json"']
    ours_names = ["ours", *(f"ours_{v}" for v in variants or {})]
    rows: dict[str, list] = {"bare": [], "pgbackrest": [], **{n: [] for n in ours_names}}
    cpu: dict[str, list] = {n: [] for n in rows}
    peaks: dict[str, dict] = {}
    # Each run's own report (the backup task, the checks' steps) and its phases from the Prefect
    # server's records (before the flow run, the tasks, after it).
    steps: dict[str, list] = {n: [] for n in ours_names}
    settled: list[float] = []  # seconds each wait for a quiet archiver took (not timed)
    tools = [("bare", bare_cmd, penv),
             ("pgbackrest", pgbr(pgbr_conf, "--type=full", "backup") if pgbr_conf else None, os.environ),
             ("ours", ours_cmd, env_cli),
             *((f"ours_{v}", ours_cmd, {**env_cli, **extra}) for v, extra in (variants or {}).items())]
    compile_checkouts(env for _, _, env in tools[2:])
    present = [t for t in tools if t[1] is not None]
    for i in range(runs):
        # Every tool takes every place in turn (round i starts at the i-th), so none always
        # follows the same one; and each starts on a quiet cluster: the WAL every earlier backup
        # switched to is archived (by both archivers) before the clock starts — a backup's own
        # stop segment is still waited for inside its time, by pgBackRest and by ours alike.
        for name, cmd, env in present[i % len(present):] + present[:i % len(present)]:
            settled.append(round(wait_archived(cluster)[0], 2))
            started = time.time()
            seconds, cpu_s, pk = timed_cpu(cmd, env)
            rows[name].append(round(seconds, 2))
            cpu[name].append(round(cpu_s, 2))
            peaks[name] = {k: mb(v) for k, v in pk.items() if k not in ("bash", "runuser")}
            if name in steps:
                doc = json.loads((work / "ours.json").read_text())
                steps[name].append({"backup": doc.get("seconds"), "checks": doc.get("check_seconds"),
                                    "phases": flow_phases(env["PREFECT_API_URL"], started, started + seconds)})
            print(f"  {name:<12} {seconds:6.2f} s  cpu {cpu_s:6.2f} s  load {os.getloadavg()[0]:.1f}", flush=True)
    out = {"bare_stored_bytes": bare_file.stat().st_size, "ours_steps": steps["ours"], "settle_seconds": settled,
           "load_average_end": os.getloadavg()}
    for name, secs in rows.items():
        if secs:
            out[name] = {"seconds": med(secs), "all": secs, "cpu_seconds": med(cpu[name]), "cpu_all": cpu[name],
                         "peak_rss_mb": peaks[name], "ratio_to_bare": round(med(secs) / med(rows["bare"]), 3)}
            if name in steps:
                task = [s["backup"] for s in steps[name] if s["backup"] is not None]
                out[name].update(steps=steps[name], backup_task_seconds=med(task) if task else None)
    if rows["pgbackrest"]:
        for name in ours_names:
            out[f"{name}_over_pgbackrest"] = round(med(rows[name]) / med(rows["pgbackrest"]), 3)
        out["pgbackrest_repo_bytes"] = int(subprocess.run(["du", "-sb", str(work / "pgbr-repo" / "backup")],
                                                          capture_output=True, text=True).stdout.split()[0]) // runs
    bare_file.unlink()
    return out


def compile_checkouts(envs) -> None:
    """An installed bvh-ops has its modules' bytecode (pip compiles it at install). Run from a
    checkout on a machine that sets PYTHONDONTWRITEBYTECODE, every CLI run would compile the ~60
    modules it imports (~0.07 s of CPU, measured): compile each checkout under test once, as an
    install does (into its __pycache__ directories, which git ignores)."""
    import compileall

    for path in {env.get("PYTHONPATH", "").split(":")[0] for env in envs} - {""}:
        for package in ("bvh_ops", "flows", "tasks", "checks"):
            compileall.compile_dir(str(Path(path) / package), quiet=1)


def mark_target(cluster) -> str:
    """Commit a marker row, take the time, commit a second: recovery to the time must keep one."""
    with psycopg.connect(cluster.dsn("bench"), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pitr_marker (n int)")
        conn.execute("INSERT INTO pitr_marker VALUES (1)")
        time.sleep(0.5)  # T is written to the millisecond: well clear of both commits
        t = conn.execute("SELECT clock_timestamp() AT TIME ZONE 'UTC'").fetchone()[0]
        time.sleep(0.5)
        conn.execute("INSERT INTO pitr_marker VALUES (2)")
    wait_archived(cluster)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"  # pgBackRest's format, and ISO 8601


def markers(port: int, cluster) -> list[int]:
    dsn = f"postgresql://postgres:{cluster.password}@127.0.0.1:{port}/bench"
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT n FROM pitr_marker ORDER BY n")]


def pitr(cluster, work, env_cli, pgbr_conf, runs) -> dict:
    target = mark_target(cluster)
    rows: dict[str, list] = {"ours": [], "pgbackrest": []}
    got = {}
    ours_steps: list[dict] = []  # each restore's own report (--json): stages, recovery phases
    for i in range(runs):
        d = work / f"ours-restore-{i}"
        port = free_port()
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "bvh_ops.cli", "restore", "latest", "--target-dir", str(d),
                               "--to-time", target, "--start", "--port", str(port), "--json"], env=env_cli,
                              check=True, capture_output=True, text=True)
        rows["ours"].append(round(time.monotonic() - t0, 2))
        doc = json.loads(proc.stdout)
        ours_steps.append({k: doc.get(k) for k in ("seconds", "fetch_stages", "recovery", "wal_prefetched")})
        got["ours"] = markers(port, cluster)
        subprocess.run([*AS_SERVER, str(BIN15 / "pg_ctl"), "-D", str(d), "-m", "immediate", "-w", "stop"],
                       check=True, capture_output=True, cwd="/")
        shutil.rmtree(d)
        if pgbr_conf is None:
            continue
        d = work / f"pgbr-restore-{i}"
        d.mkdir(mode=0o700)
        chown_to_server(d)
        port = free_port()
        t0 = time.monotonic()
        subprocess.run(pgbr(pgbr_conf, "--type=time", f"--target={target}", "--target-action=promote",
                            f"--pg1-path={d}", "restore"), check=True)
        with open(d / "postgresql.auto.conf", "a") as fh:  # not the source's port, nor its archives
            fh.write(f"port = {port}\narchive_mode = off\n")
        subprocess.run([*AS_SERVER, str(BIN15 / "pg_ctl"), "-D", str(d), "-l", str(d / "log"), "-w", "start"],
                       check=True, capture_output=True, cwd="/")
        dsn = f"postgresql://postgres:{cluster.password}@127.0.0.1:{port}/postgres"
        while True:
            try:
                with psycopg.connect(dsn, connect_timeout=3) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        break
            except psycopg.OperationalError:
                pass
            time.sleep(0.1)
        rows["pgbackrest"].append(round(time.monotonic() - t0, 2))
        got["pgbackrest"] = markers(port, cluster)
        subprocess.run([*AS_SERVER, str(BIN15 / "pg_ctl"), "-D", str(d), "-m", "immediate", "-w", "stop"],
                       check=True, capture_output=True, cwd="/")
        shutil.rmtree(d)
    out = {"target": target, "marker_rows_recovered": got, "ours_steps": ours_steps}
    for name, secs in rows.items():
        if secs:
            out[name] = {"seconds": med(secs), "all": secs}
    if rows["pgbackrest"]:
        out["ours_over_pgbackrest"] = round(med(rows["ours"]) / med(rows["pgbackrest"]), 3)
    return out


def generate_wal(cluster, segments: int) -> None:
    """Write incompressible-ish rows until at least ``segments`` complete segments exist."""
    with psycopg.connect(cluster.dsn("bench"), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS walfill (t text)")
        while len(completed_segments(cluster)) < segments:
            conn.execute("INSERT INTO walfill SELECT md5(random()::text) || md5(random()::text) "
                         "FROM generate_series(1, 200000)")


def completed_segments(cluster) -> list[str]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        current = conn.execute("SELECT pg_walfile_name(pg_current_wal_insert_lsn())").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT name FROM pg_ls_waldir()")]
    return sorted(n for n in names if len(n) == 24 and n < current)


def _pushing(src: Path, listing: str, push: str, interval: float) -> list[str]:
    """bash running ``push "<file>"`` for each file, then marking it done, as PostgreSQL's
    archiver does: all files ready beforehand (interval 0), or each marked ready ``interval``
    seconds after the previous one."""
    step = f'{push} "{src}/$f" || exit 1; mv "archive_status/$f.ready" "archive_status/$f.done"'
    if interval:
        # awk's print would round epoch seconds to 6 digits: printf them
        step = (f'next=$(awk -v t="$(date +%s.%N)" "BEGIN {{printf \\"%.3f\\", t + {interval}}}"); '
                f'touch "archive_status/$f.ready"; {step}; '
                f'sleep "$(awk -v n="$next" -v t="$(date +%s.%N)" "BEGIN {{d = n - t; printf \\"%.3f\\", (d > 0 ? d : 0)}}")"')
    return ["bash", "-c", f'cd "{src}" && for f in {listing}; do {step}; done']


def wal_throughput(cluster, work, keys, pgbr_conf, segments, runs, interval: float = 0.0) -> dict:
    generate_wal(cluster, segments)
    names = completed_segments(cluster)[-segments:]
    src = work / "walsrc" / "pg_wal"
    (src / "archive_status").mkdir(parents=True)
    for n in names:
        shutil.copyfile(cluster.data / "pg_wal" / n, src / n)
    # pgBackRest pushes only from below pg1-path and reads its pg_control: a copy of both.
    (src.parent / "global").mkdir()
    shutil.copyfile(cluster.data / "global" / "pg_control", src.parent / "global" / "pg_control")
    chown_tree_to_server(src.parent)
    listing = " ".join(names)
    # ours: the default plaintext digest (sha256); ours_blake3: wal_digest = blake3.
    rows: dict[str, list] = {"ours": [], "ours_blake3": [], "pgbackrest": []}
    for i in range(runs):
        for variant in ("ours", "ours_blake3") if i % 2 == 0 else ("ours_blake3", "ours"):
            root = work / f"walbench-{i}"
            (root / "keys").mkdir(parents=True)
            shutil.copy(keys[0], root / "keys" / "recipient.pub")
            os.chmod(root, 0o755)
            cfg = local_archive_config(root, wal_digest="blake3" if variant == "ours_blake3" else None)
            for n in names if not interval else ():  # as PostgreSQL marks them: push-ahead (ours) and async (pgBackRest) read them
                (src / "archive_status" / f"{n}.ready").touch()
            chown_tree_to_server(src.parent)
            ours = _pushing(src, listing, f"BVH_OPS_CONFIG={cfg} {wal_command()} push", interval)
            rows[variant].append(tree_timed([*AS_SERVER, *ours], work / "cpu.json"))
            shutil.rmtree(root)
        if pgbr_conf is None:
            continue
        repo, spool = work / f"pgbr-walrepo-{i}", work / f"pgbr-walspool-{i}"
        for p in (repo, spool):
            p.mkdir()
            chown_to_server(p)
        for n in names if not interval else ():
            (src / "archive_status" / f"{n}.ready").touch()
        chown_tree_to_server(src.parent)
        over = [f"--repo1-path={repo}", f"--spool-path={spool}", f"--pg1-path={src.parent}"]
        subprocess.run(pgbr(pgbr_conf, over[0], "stanza-create"), check=True)
        push = " ".join(pgbr(pgbr_conf, *over, "archive-push")[len(AS_SERVER):])
        cmd = _pushing(src, listing, push, interval)
        rows["pgbackrest"].append(tree_timed([*AS_SERVER, *cmd], work / "cpu.json"))
        for p in (repo, spool):
            shutil.rmtree(p)
    out: dict = {"segments": len(names), "mb": len(names) * SEG // 2**20, "load_average": os.getloadavg(),
                 "interval": interval}
    for name, runs_ in rows.items():
        if runs_:
            secs, cpu = [r["seconds"] for r in runs_], [r["cpu_seconds"] for r in runs_]
            out[name] = {"seconds": med(secs), "all": secs, "segments_per_s": round(len(names) / med(secs), 2),
                         "mb_per_s": round(len(names) * SEG / 2**20 / med(secs), 1),
                         "cpu_seconds": med(cpu), "cpu_all": cpu, "cpu_ms_per_segment": round(med(cpu) * 1000 / len(names)),
                         "max_rss_mb": max(r["max_rss_mb"] for r in runs_)}
    if rows["pgbackrest"]:
        for name in ("ours", "ours_blake3"):
            out[f"{name}_over_pgbackrest"] = round(out[name]["seconds"] / out["pgbackrest"]["seconds"], 3)
            out[f"{name}_over_pgbackrest_cpu"] = round(out[name]["cpu_seconds"] / out["pgbackrest"]["cpu_seconds"], 3)
    return out


def tree_timed(cmd: list[str], out: Path) -> dict:
    """Wall time of ``cmd`` and the CPU of every process it started, including the archivers it
    leaves running in the background (bench/cputime.py waits for them to end)."""
    subprocess.run([sys.executable, str(Path(__file__).with_name("cputime.py")), str(out), "--", *cmd], check=True)
    return json.loads(out.read_text())


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """``NAME:KEY=VALUE[,KEY=VALUE]`` → {NAME: {KEY: VALUE}}."""
    out = {}
    for spec in specs:
        name, _, settings = spec.partition(":")
        pairs = [kv.split("=", 1) for kv in settings.split(",") if kv]
        if not name or any(len(p) != 2 for p in pairs):
            raise SystemExit(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        out[name] = dict(pairs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=100, help="pgbench scale (100 is about 1.5 GB)")
    ap.add_argument("--segments", type=int, default=128, help="WAL segments for the archiving throughput")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="pgbench scale 5, 32 segments")
    ap.add_argument("--workdir", default="/tmp/bvh-bench-pgbackrest")
    ap.add_argument("--parts", default="wal,full,pitr", help="which measurements (comma-separated)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                    help="full: also ours with these environment settings, alternated in each round "
                         "(e.g. t0:BVH_OPS_COMPRESSION_THREADS=0, or main:PYTHONPATH=/path/to/another/checkout)")
    ap.add_argument("--wal-interval", type=float, default=0.0,
                    help="wal: seconds between segments becoming ready (0: all ready at once)")
    args = ap.parse_args()
    if args.quick:
        args.scale, args.segments = 5, 32
    if not (BIN15 / "postgres").exists():
        print(f"skipped: Debian's PostgreSQL 15 binaries are not in {BIN15} (apt-get install postgresql-15)")
        return
    if PGBACKREST is None:
        print("pgbackrest not found: its rows are skipped (apt-get install pgbackrest)")
    work, keys = fresh_workdir(args.workdir)
    cluster, pgbr_conf = make_cluster(work, PGBACKREST is not None)
    parts = args.parts.split(",")
    try:
        server = start_prefect_server(work) if {"full", "pitr"} & set(parts) else {"env": dict(os.environ)}
    except BaseException:
        cluster.stop()
        raise
    env_cli = {**server["env"], "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
               "BVH_OPS_DATABASE_URL": cluster.dsn("bench"), "BVH_OPS_REPOSITORY": f"file://{work / 'repo'}",
               "BVH_OPS_RECIPIENTS": str(keys[0]), "BVH_OPS_IDENTITY": str(keys[1]),
               "BVH_OPS_STATE_DIR": str(work / "state")}
    result: dict = {"scale": args.scale, "pgbackrest": PGBACKREST and subprocess.run(
        [PGBACKREST, "version"], capture_output=True, text=True).stdout.strip()}
    try:
        create_database(cluster.dsn(), "bench")
        subprocess.run([str(BIN15 / "pgbench"), "-i", "-q", "-s", str(args.scale), "bench"],
                       env=pg_env(cluster.dsn("bench")), check=True, capture_output=True)
        with psycopg.connect(cluster.dsn("bench"), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
            result["database_bytes"] = conn.execute("SELECT pg_database_size('bench')").fetchone()[0]
        wait_archived(cluster)
        name = "pgbackrest" + ("_quick" if args.quick else "") + ("" if args.parts == "wal,full,pitr" else
                                                                    "_" + args.parts.replace(",", "_"))
        name += f"_every{args.wal_interval:g}s" if args.wal_interval else ""
        for part, run in (("wal", lambda: wal_throughput(cluster, work, keys, pgbr_conf, args.segments, args.runs,
                                                          args.wal_interval)),
                          ("full", lambda: backups(cluster, work, env_cli, pgbr_conf, args.runs,
                                                   parse_variants(args.variant))),
                          ("pitr", lambda: pitr(cluster, work, env_cli, pgbr_conf, args.runs))):
            if part not in parts:
                continue
            print(f"{time.strftime('%H:%M:%S')} {part}", flush=True)
            result[part] = run()
            save_result(name, {"machine": machine(), "load_average": os.getloadavg(), "result": result})
    finally:
        cluster.stop()
        if "proc" in server:
            server["proc"].terminate()
            server["proc"].wait(timeout=60)


if __name__ == "__main__":
    main()
