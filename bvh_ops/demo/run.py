"""`bvh-ops demo`: the whole daily-backup story on one machine, with nothing installed but the
package: embedded PostgreSQL 18, sample lottery data, keys, a file:// repository, the Prefect
flow, deep verify, restore into a scratch database and a fingerprint comparison."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

DEMO_DB = "lottery"
RESTORE_DB = "lottery_restore"
# The monitoring step: probe cycles this far apart (real time); the slowdown it injects and the
# response time above which a passing answer is a warning; the subjects it waits for.
CYCLE_SECONDS = 0.5
SLOW_MS = 600
SLOW_WARNING_MS = 400
FIRED = "[CRITICAL FIRING] system down"
RESOLVED = "[CRITICAL RESOLVED] system down"


def _state_dir() -> Path:
    return Path(os.environ.get("BVH_OPS_STATE_DIR", ".bvh-ops")).resolve()


def stop_demo(console: Console | None = None) -> None:
    """Stop what ``--keep-running`` left running: the dashboard, the monitor, the sample platform
    (by their pid files) and the embedded PostgreSQL (the demo's and the ops database)."""
    from bvh_ops.demo.background import stop
    from bvh_ops.pg.cluster import EmbeddedCluster

    state = _state_dir()
    for name in ("dashboard", "monitor", "platform"):
        if stop(state, name) and console is not None:
            console.print(f"stopped the demo's {name}")
    stop(state)
    EmbeddedCluster(state / "pg").stop()


def _step(console: Console, text: str):
    console.print(f"[bold cyan]›[/] {text} …")
    return time.monotonic()


def _done(console: Console, t0: float, extra: str = "") -> None:
    console.print(f"  [green]done[/] in {time.monotonic() - t0:.1f} s{('  ' + extra) if extra else ''}")


def write_demo_config(state: Path, dsn: str) -> Path:
    from bvh_ops.demo.files_step import write_platform_app
    from bvh_ops.demo.sample import invariants_toml
    from bvh_ops.pg.cluster import free_port, server_wal_dir

    cfg = state / "bvh-ops.toml"
    cfg.write_text(
        "# Written by `bvh-ops demo`; use it with BVH_OPS_CONFIG=.bvh-ops/bvh-ops.toml\n"
        f'database_url = "{dsn}"\n'
        f'repository = "file://{state / "repo"}"\n'
        f'recipients = ["{state / "keys" / "recipient.pub"}"]\n'
        f'identity = "{state / "keys" / "identity.key"}"\n'
        f'state_dir = "{state}"\n'
        "# The second region's copy (a directory standing in for a bucket in another region).\n"
        f'replica_repository = "file://{state / "replica"}"\n'
        "\n# The lottery's domain invariants, checked on every restored copy by the DR drill.\n"
        + invariants_toml()
        + write_platform_app(state, dsn, free_port())
    )
    cfg.chmod(0o600)
    server_wal_dir(state / "replica")  # a standby built from the replica reads its WAL as the server's user
    return cfg


def _archiving_cluster(state: Path, console: Console):
    """The demo cluster, archiving through bvh-ops wal-push with WAL summaries on (an existing
    demo cluster from an older version gets the settings through ALTER SYSTEM and a restart)."""
    import psycopg

    from bvh_ops.pg.cluster import EmbeddedCluster, archiving_conf, local_archive_config

    # Every host reading this archive runs this bvh-ops: its WAL entries carry BLAKE3 (wal_digest).
    conf = archiving_conf(local_archive_config(state, wal_digest="blake3"), archive_timeout=60)
    cluster = EmbeddedCluster(state / "pg", extra_conf=conf)
    cluster.start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        current = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(conf),)).fetchall())
        stale = {k: v for k, v in conf.items() if current.get(k) != v.strip("'")}
        for key, value in stale.items():
            conn.execute(f"ALTER SYSTEM SET {key} = {value}")
    if stale:
        cluster.stop()
        cluster.start()
    return cluster


def run_demo(*, scale: float, keep_running: bool, console: Console) -> bool:
    from bvh_ops.demo.sample import load_sample
    from bvh_ops.pg.catalog import create_database

    state = _state_dir()
    state.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    keys = state / "keys"
    if not (keys / "identity.key").exists():
        from bvh_ops.keys import write_keypair

        t = _step(console, "generating a demo key pair (ML-KEM-768 + X25519)")
        write_keypair(keys)
        _done(console, t)
    t = _step(console, "starting embedded PostgreSQL 18 (archive_command = bvh-ops-wal push, summarize_wal = on)")
    cluster = _archiving_cluster(state, console)
    _done(console, t, f"listening on 127.0.0.1:{cluster.port}, data in {cluster.data}")
    try:
        t = _step(console, f"loading the sample lottery platform (scale {scale}) into database '{DEMO_DB}'")
        create_database(cluster.dsn(), DEMO_DB)
        rows = load_sample(cluster.dsn(DEMO_DB), scale=scale)
        _done(console, t, f"{sum(rows.values())} rows in {len(rows)} tables")
        from bvh_ops.demo.sample import Workload

        t = _step(console, "running the ticket-purchase workload for 3 s (live writes, like production)")
        stats = Workload(cluster.dsn(DEMO_DB), rate=50).start()
        time.sleep(3)
        wl = stats.stop()
        _done(console, t, f"{wl.transactions} purchases committed")

        cfg = write_demo_config(state, cluster.dsn(DEMO_DB))
        os.environ["BVH_OPS_CONFIG"] = str(cfg)
        for var in ("BVH_OPS_DATABASE_URL", "BVH_OPS_REPOSITORY", "BVH_OPS_RECIPIENTS", "BVH_OPS_IDENTITY"):
            os.environ.pop(var, None)
        os.environ["BVH_OPS_STATE_DIR"] = str(state)

        from bvh_ops.config import load_settings

        settings = load_settings()
        t = _step(console, "running the daily-backup flow through Prefect (snapshot → pg_dump → zstd → AES-GCM → "
                           "repository; then a physical full with pg_basebackup starting the chain)")
        from flows.daily_backup import daily_backup

        result = daily_backup(target=f"{DEMO_DB} (demo)")
        _done(console, t, f"logical {result['backup_id']}, physical full {result['physical_backup_id']}; "
                          f"{result.get('file_sets_status', 'no file sets')}")
        pitr_ok, pitr_row = _incremental_and_pitr(
            cluster, settings, console, (result.get("physical") or {}).get("bytes_in"))

        t = _step(console, "deep-verifying the backup (decrypt, decompress, sha256 of every object)")
        from bvh_ops.keys import load_identities
        from bvh_ops.repository.open import open_repository
        from bvh_ops.repository.verify import verify_backup

        repo, _ = open_repository(settings)
        vres = verify_backup(repo, result["backup_id"], identities=load_identities(settings.require_identity()))
        verify_ok = all(r.ok for r in vres)
        _done(console, t, f"{sum(r.ok for r in vres)}/{len(vres)} objects OK")

        t = _step(console, f"restoring into scratch database '{RESTORE_DB}' and comparing fingerprints")
        from bvh_ops.logical.restore import restore_logical

        create_database(cluster.dsn(), RESTORE_DB)
        restored = restore_logical(settings, result["backup_id"], cluster.dsn(RESTORE_DB))
        matched = sum(c.ok for c in restored.comparisons)
        _done(console, t, f"{matched}/{len(restored.comparisons)} tables identical")

        from bvh_ops.units import human_bytes

        summary = Table(title="bvh-ops demo: daily backup", show_header=False)
        summary.add_column(style="bold")
        summary.add_column()
        checks_ok = all(c["status"] == "passed" for c in result["checks"])
        summary.add_row("backup id", result["backup_id"])
        summary.add_row("tables / rows", f"{len(result['tables'])} / {sum(v['rows'] for v in result['tables'].values())}")
        summary.add_row("bytes in / stored", f"{human_bytes(result['bytes_in'])} / {human_bytes(result['bytes_stored'])}")
        summary.add_row("throughput", f"{result['mb_per_s']} MB/s")
        summary.add_row("encryption", "AES-256-GCM STREAM, data key sealed with HPKE ML-KEM-768+X25519")
        summary.add_row("flow checks (GX)", f"{sum(c['status'] == 'passed' for c in result['checks'])}/"
                                           f"{len(result['checks'])} passed")
        summary.add_row("deep verify", "OK" if verify_ok else "FAILED")
        summary.add_row("restore + compare", f"{'OK' if restored.ok else 'MISMATCH'} ({matched}/"
                                             f"{len(restored.comparisons)} tables, {restored.seconds:.1f} s)")
        t = _step(console, "running the DR drill flow, logical (the daily dump) and physical (to the end of the "
                           "archived WAL, after the repair): scratch PostgreSQL → restore → checks; base + WAL → "
                           "recover → pg_amcheck → checks; RTO/RPO")
        from flows.dr_drill import DrillFailed, dr_drill

        try:
            drill = dr_drill(backup=result["backup_id"], mode="both")
        except DrillFailed as exc:
            drill = exc.report
        _done(console, t, f"drill {drill['drill_id']} {'PASSED' if drill['passed'] else 'FAILED'}")
        from bvh_ops.drill.render import print_drill

        print_drill(drill, console)
        summary.add_row("incremental + PITR", pitr_row)
        summary.add_row("DR drill", f"{'PASSED' if drill['passed'] else 'FAILED'}: RTO {drill['rto_seconds']} s, "
                                    f"RPO {drill['rpo_seconds']} s, "
                                    f"{sum(c['status'] == 'passed' for c in drill['checks'])}/{len(drill['checks'])} checks")
        mon_ok, mon_row = _monitoring(cluster.dsn(DEMO_DB), _ops_dsn(cluster), state, console)
        summary.add_row("monitoring", mon_row)
        from bvh_ops.demo.logs_step import run_logs_step

        logs_ok, logs_row, _ = run_logs_step(settings, _ops_dsn(cluster), state, console)
        summary.add_row("logs + audit", logs_row)
        from bvh_ops.demo.ops_steps import run_ops_steps

        ops_ok, ops_rows, _ = run_ops_steps(settings, _ops_dsn(cluster), state, console)
        for name, row in ops_rows:
            summary.add_row(name, row)
        from bvh_ops.demo.files_step import run_files_step

        files_ok, files_row, _ = run_files_step(settings, state, console)
        summary.add_row("application recovery", files_row)
        from bvh_ops.demo.region_step import run_region_step

        region_ok, region_row, _ = run_region_step(settings, console)
        summary.add_row("second region + failover", region_row)
        if keep_running:
            summary.add_row("left running", _keep_running(cluster, state, cfg, console))
        summary.add_row("repository", str(settings.repository))
        summary.add_row("total time", f"{time.monotonic() - t_start:.0f} s")
        console.print(summary)
        console.print(
            f"Next: [bold]BVH_OPS_CONFIG={cfg} .venv/bin/bvh-ops backups list[/]; "
            "run history and artifacts: [bold]make ui[/] → http://127.0.0.1:4200 (Runs → daily-backup / dr-drill → Artifacts)"
        )
        return (verify_ok and restored.ok and checks_ok and drill["passed"] and pitr_ok and mon_ok and logs_ok
                and ops_ok and files_ok and region_ok)
    finally:
        if not keep_running:
            cluster.stop()


def _ops_dsn(cluster) -> str | None:
    """The ops database 'bvh_ops' on the demo's cluster (the DR drill recorded there); None when
    it cannot be had (the alerting step then keeps its state in memory and says so)."""
    import psycopg

    from bvh_ops.opsdb.database import ensure_database

    try:
        return ensure_database(cluster)
    except (psycopg.Error, OSError):
        return None


def _keep_running(cluster, state: Path, cfg: Path, console: Console) -> str:
    """--keep-running: the ops database started explicitly (as `bvh-ops opsdb start`), then the
    sample platform, a `bvh-ops monitor` loop recording samples, and the dashboard, as background
    processes with pid files under state_dir/run (`bvh-ops demo --stop` stops them)."""
    from bvh_ops.demo.background import start_dashboard, start_monitor, start_platform, stop
    from bvh_ops.opsdb.database import ensure_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    t = _step(console, "--keep-running: the ops database, the sample platform, bvh-ops monitor and the dashboard "
                       "stay up in the background")
    with connect(ensure_database(cluster), autocommit=True) as conn:
        migrate(conn)
    try:
        platform = start_platform(state, cluster.dsn(DEMO_DB))
        start_monitor(state, cfg, platform.url)
        dashboard = start_dashboard(state, cfg, platform.url)
    except BaseException:
        stop(state)  # all or nothing: no half of it left behind
        raise
    _done(console, t, f"platform {platform.url}, dashboard {dashboard.url}")
    console.print(f"[bold]Dashboard:[/] {dashboard.url}  (pid files and logs in {state / 'run'}; "
                  "[bold]bvh-ops demo --stop[/] or [bold]make clean[/] stops everything)")
    return f"dashboard {dashboard.url}, platform {platform.url}, monitor (bvh-ops demo --stop stops them)"


def _incremental_and_pitr(cluster, settings, console: Console, full_bytes: int | None) -> tuple[bool, str]:
    """Writes → the incremental-backup flow → an exact cut with a restore point → an "incident"
    → point-in-time restore (full + incremental + WAL) to the cut, compared → the source's
    wallets repaired from the restored copy."""
    import shutil

    import psycopg

    from bvh_ops.demo.sample import Workload, consistent_cut, cut_fingerprints
    from bvh_ops.pg.tools import embedded_bin_dir
    from bvh_ops.physical.restore import restore_physical, stop_server
    from bvh_ops.physical.target import RecoveryTarget
    from flows.incremental_backup import incremental_backup

    dsn = cluster.dsn(DEMO_DB)
    t = _step(console, "live writes while the incremental-backup flow runs (pg_basebackup --incremental, "
                       "checks, WAL continuity)")
    work = Workload(dsn, rate=50).start()
    try:
        time.sleep(2)
        inc = incremental_backup()
        time.sleep(1)
    finally:
        wl = work.stop()
    _done(console, t, f"incremental {inc['backup_id']} on {inc['parent_id']}: {inc['bytes_in'] / 1e6:.1f} MB in"
                      + (f" (the full: {full_bytes / 1e6:.1f} MB)" if full_bytes else "")
                      + f"; {wl.transactions} purchases meanwhile")
    t = _step(console, "an exact cut with a restore point 'before_incident' (rows, LSN, time)")
    cut = consistent_cut(dsn, "before_incident")
    _done(console, t, f"at {cut.time}, LSN {cut.lsn}: {cut.counts['tickets'][0]} tickets")
    t = _step(console, "the incident: a bad deploy empties every wallet (UPDATE wallets SET balance = 0)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE wallets SET balance = 0")
        conn.execute("SELECT pg_switch_wal()")
    time.sleep(1)
    _done(console, t)
    target_dir = _state_dir() / "pitr-restore"
    shutil.rmtree(target_dir, ignore_errors=True)
    t = _step(console, f"point-in-time restore to {cut.time} (full + incremental → pg_combinebackup → "
                       "pg_verifybackup → recovery through wal-fetch → promote), then repair the source's "
                       "wallets from it")
    report = restore_physical(settings, "latest", target_dir, target=RecoveryTarget("time", cut.time), start=True)
    try:
        restored = f"postgresql://postgres:{cluster.password}@127.0.0.1:{report.port}/{DEMO_DB}"
        with psycopg.connect(restored) as conn:
            got = cut_fingerprints(conn)
        repaired = _repair_wallets(restored, dsn)
    finally:
        stop_server(target_dir, embedded_bin_dir())
        shutil.rmtree(target_dir, ignore_errors=True)
    ok = got == cut.counts
    secs = sum(report.seconds.values())
    _done(console, t, f"chain {' + '.join(report.chain)}; {'exactly the rows of the cut' if ok else 'MISMATCH'} "
                      f"in {secs:.1f} s; {repaired} wallet balances repaired in the source")
    return ok, (f"{'OK' if ok else 'MISMATCH'}: incremental {inc['bytes_in'] / 1e6:.1f} MB; restored to "
                f"'before_incident' in {secs:.1f} s, {got['tickets'][0]} tickets as at the cut; "
                f"{repaired} wallets repaired")


def _repair_wallets(restored_dsn: str, source_dsn: str) -> int:
    """The runbook's selective repair: stream the balances from the point-in-time copy into the
    source (COPY to COPY, never the table in memory) and put back the ones the incident changed."""
    import psycopg

    from bvh_ops.physical.backup import switch_wal_and_wait

    with psycopg.connect(restored_dsn) as src, psycopg.connect(source_dsn) as dst:
        dst.execute("CREATE TEMP TABLE wallet_fix (id bigint PRIMARY KEY, balance numeric) ON COMMIT DROP")
        with src.cursor().copy("COPY (SELECT id, balance FROM wallets) TO STDOUT") as out, \
                dst.cursor().copy("COPY wallet_fix (id, balance) FROM STDIN") as into:
            for block in out:
                into.write(block)
        n = dst.execute("UPDATE wallets w SET balance = f.balance FROM wallet_fix f "
                        "WHERE w.id = f.id AND w.balance IS DISTINCT FROM f.balance").rowcount
        dst.commit()
        # Archive the repair at once (archive_timeout would within a minute): the drill that
        # follows recovers to the end of the archive and must see the repaired balances.
        dst.autocommit = True
        switch_wal_and_wait(dst, timeout=60)
    return n


def _monitoring(dsn: str, ops_dsn: str | None, state: Path, console: Console) -> tuple[bool, str]:
    """The sample platform (the lottery API over the demo database) under load, watched by
    bvh-ops's probes, every cycle fed to the alerting runtime with real receivers (an SMTP sink and
    a Slack-format webhook on 127.0.0.1): healthy → the API slows down (a warning, batched hourly)
    → the database becomes unreachable for the API → the probes say critical → the critical email
    and webhook arrive → it comes back → healthy again, the resolved notice arrives → the hour's
    warning batch and the day's digest, rendered."""
    from datetime import UTC, datetime

    from bvh_ops.config import load_settings
    from bvh_ops.demo.alerts import DemoAlerts
    from bvh_ops.demo.platform import WorkloadDriver, serve_platform
    from bvh_ops.monitoring.cycle import run_cycle
    from bvh_ops.monitoring.results import Status

    t = _step(console, "starting the sample platform (lottery API + Redis cache) with load, an SMTP sink and a "
                       "webhook receiver on 127.0.0.1, the alerting runtime, and probing")
    platform = serve_platform(dsn, "127.0.0.1", 0, state / "platform.jsonl", window_s=5)
    failures: list[str] = []
    try:
        with DemoAlerts(ops_dsn) as alerts:
            settings = load_settings(
                endpoints=[
                    {"name": "api-health", "service": "api", "url": platform.url + "/api/health",
                     "conditions": ["[STATUS] == 200", "[BODY].status == healthy", "[RESPONSE_TIME] < 1000"]},
                    {"name": "api-metrics", "service": "api", "url": platform.url + "/api/metrics",
                     "conditions": ["[STATUS] == 200", "[BODY].system.errorRate < 1"]},
                ],
                # a passing answer slower than this is a warning: the slowdown below shows one
                response_time_warning_ms=SLOW_WARNING_MS,
                alerting=alerts.config(datetime.now(UTC)))
            where = alerts.start(settings)

            def api() -> tuple[Status, str]:
                cycle = run_cycle(settings)
                alerts.feed(cycle)
                mine = [c for c in cycle.checks if c.service == "api"]
                worst = max(mine, key=lambda c: ("ok", "warning", "unknown", "critical").index(str(c.status)))
                others = ", ".join(f"{sv} {st}" for sv, st in sorted(
                    {c.service: str(c.status) for c in cycle.checks if c.status is not Status.OK}.items()))
                return worst.status, (f"api {worst.status} ({worst.name}: {worst.detail}); "
                                      f"{'not ok: ' + others if others else 'every check ok'}")

            def until(want: Status, also=lambda: True, limit: float = 60.0) -> str:
                deadline = time.monotonic() + limit
                while True:
                    status, line = api()
                    if (status is want and also()) or time.monotonic() > deadline:
                        if status is want and also():
                            return line
                        failures.append(f"still {status} after {limit:.0f} s: {line}")
                        return failures[-1]
                    time.sleep(CYCLE_SECONDS)

            def firing(name: str) -> bool:
                return any(s.alert.name == name and s.phase == "firing" for s in alerts.runtime.alerter.firing())

            with WorkloadDriver(platform.url, rate=20, threads=2, users=100):
                before = until(Status.OK)
                _done(console, t, f"before: {before}")
                console.print(f"  alerting: email → SMTP sink 127.0.0.1:{alerts.smtp.port}, webhook (slack) → "
                              f"{alerts.hook.url}; {where}")
                alerts.set_aside()      # what an earlier run left owed is delivered at start

                t = _step(console, f"slowdown: every API answer {SLOW_MS} ms slower (warning above "
                                   f"{SLOW_WARNING_MS} ms; 'slow responses' fires after 3 samples, batched hourly)")
                platform.set_faults(slow_ms=SLOW_MS)
                slow = until(Status.WARNING, also=lambda: firing("slow responses"), limit=30)
                _done(console, t, f"slow: {slow}")

                t = _step(console, "incident: the platform loses its database (fault injected for a while); "
                                   "'system down' fires after 2 critical samples")
                platform.set_faults(db_down=True)
                during = until(Status.CRITICAL, also=lambda: all(alerts.received(FIRED)))
                _done(console, t, f"during: {during}")
                mail, post = alerts.received(FIRED)
                _show_received(console, "the critical email, as the SMTP sink received it", mail, post)

                t = _step(console, "recovery: the database is back; 'system down' resolves after 2 good samples")
                platform.set_faults()
                after = until(Status.OK, also=lambda: all(alerts.received(RESOLVED)))
                _done(console, t, f"after: {after}")
                mail, post = alerts.received(RESOLVED)
                _show_received(console, "the resolved notice, as the SMTP sink received it", mail, post)
            counts = (len(alerts.mails) - alerts.mark[0], len(alerts.posts) - alerts.mark[1])
            _rendered(console, alerts, settings)
        if not failures:
            console.print(f"  receivers got {counts[0]} email(s) and {counts[1]} webhook POST(s) during the "
                          "incident (criticals at once; warnings wait for the hour's batch)")
    except Exception as exc:  # noqa: BLE001 - the demo reports a failed step and carries on
        failures.append(f"{type(exc).__name__}: {exc}")
        console.print(f"  [red]FAILED[/]: {escape(failures[-1])}")
    finally:
        platform.stop()
    if failures:
        return False, "FAILED: " + "; ".join(failures)
    return True, ("OK: healthy → slow (warning) → critical while the API had no database (critical email + "
                  "webhook received) → healthy again (resolved notice received)")


def _show_received(console: Console, title: str, mail, post) -> None:
    from bvh_ops.demo.alerts import mail_lines, post_lines

    console.print(f"  [bold]{title}:[/]")
    for line in mail_lines(mail) if mail else ["(not received)"]:
        console.print("    " + line, markup=False, highlight=False)
    console.print("  [bold]the webhook, as the receiver got it (Slack JSON):[/]")
    for line in post_lines(post) if post else ["(not received)"]:
        console.print("    " + line, markup=False, highlight=False)


def _rendered(console: Console, alerts, settings) -> None:
    """The hour's warning batch and the day's digest as they would be sent (not sent now)."""
    from datetime import UTC, datetime

    from bvh_ops.demo.alerts import message_lines

    now = datetime.now(UTC)
    batch = alerts.hour_batch(now)
    console.print(f"  [bold]the warning batch for {now:%H}:00-{(now.hour + 1) % 24:02d}:00 UTC, rendered for "
                  "this hour[/] (sent once the hour is over):")
    for line in message_lines(batch) if batch else ["(no warning this hour: no batch is owed)"]:
        console.print("    " + line, markup=False, highlight=False)
    t = time.monotonic()
    digest = alerts.day_digest(settings, now)
    console.print(f"  [bold]the daily digest over the 24 h up to now, rendered for this day[/] (sent once a day at "
                  f"digest_at; gathered in {time.monotonic() - t:.1f} s):")
    for line in message_lines(digest):
        console.print("    " + line, markup=False, highlight=False)
