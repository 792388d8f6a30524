"""Alerting (issue #12): end-to-end latency from a fault to the delivered critical, and the
notifier's cost with 1,000 firing alerts.

1. Latency: a real HTTP health endpoint (in this process, on its own thread) starts failing at T,
   at a random point of the probe interval; real ``run_cycle`` probes every ``--interval`` seconds
   (start to start, as ``bvh-ops monitor``) feed an AlertingRuntime (its real delivery threads, the
   ops database written through) with a real SMTP sink and a Slack-format webhook receiver on
   127.0.0.1. Measured: T -> email received and T -> webhook POST received (a thread blocked on
   each receiver's queue stamps the arrival), median over ``--runs``. The runbook's 30 s interval
   is not run (minutes per run): its bound is fire_after x interval + one cycle + delivery.
2. Cost: ``Alerter.observe`` over 1,000 checks each matching "system down" (1,000 api endpoints,
   critical) — the cycle that fires them, then steady-state cycles (wall, CPU), the peak RSS; the
   1,000 fired notices delivered through one real webhook receiver by ``Deliverer`` (with the
   notification log written through after each attempt, as the runtime does); ``Persistence.sync``
   of the firing cycle and of a steady-state cycle into the ops database.

The ops database: an embedded PostgreSQL 18 started under ``--workdir`` (as bench_opsdb.py).
Not a test: ``python bench/bench_alerting.py [--runs 5] [--interval 1] [--alerts 1000]``.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_daily_backup import machine  # noqa: E402
from bench.results import save_result  # noqa: E402
from bvh_ops.alerting.channels.webhook import WebhookChannel  # noqa: E402
from bvh_ops.alerting.delivery import Deliverer  # noqa: E402
from bvh_ops.alerting.engine import Alerter  # noqa: E402
from bvh_ops.alerting.rules import DEFAULT_RULES  # noqa: E402
from bvh_ops.alerting.runtime import AlertingRuntime  # noqa: E402
from bvh_ops.alerting.store import Persistence  # noqa: E402
from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.demo.receivers import HttpReceiver, SmtpSink  # noqa: E402
from bvh_ops.monitoring.cycle import run_cycle  # noqa: E402
from bvh_ops.monitoring.results import Check, Status  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster  # noqa: E402

RUNBOOK_INTERVAL = 30.0
FIRED = "[CRITICAL FIRING] system down: api (api-health)"
FIRE_AFTER = next(r.fire_after for r in DEFAULT_RULES if r.name == "system down")
# The host probe must not decide anything here (a loaded shared machine): thresholds at 100 %.
CALM_HOST = {"cpu_warning_percent": 100, "cpu_critical_percent": 100, "memory_warning_percent": 100,
             "memory_critical_percent": 100, "disk_warning_percent": 100, "disk_critical_percent": 100,
             "load_per_core_warning": 1000, "load_per_core_critical": 1000}


class Endpoint:
    """A health endpoint switchable between 200 and 503."""

    def __init__(self) -> None:
        self.healthy = True
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = json.dumps({"status": "healthy" if me.healthy else "down"}).encode()
                self.send_response(200 if me.healthy else 503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/health"


class Arrival(threading.Thread):
    """Blocks on a receiver's queue; stamps (monotonic) each arrival whose text holds ``marker``."""

    def __init__(self, q, text, marker: str) -> None:
        super().__init__(daemon=True)
        self.q, self.text, self.marker = q, text, marker
        self.at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            item = self.q.get()
            if item is None:
                return
            if self.marker in self.text(item):
                self.at = time.monotonic()
                self.done.set()


def fresh_database(cluster: EmbeddedCluster, name: str) -> str:
    """An empty ops database per part (the cost part leaves 1,000 alerts firing)."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    create_database(cluster.dsn(), name)
    return cluster.dsn(name)


def latency_run(settings: Settings, endpoint: Endpoint, smtp: SmtpSink, hook: HttpReceiver, ops: str,
                interval: float, rng: random.Random) -> dict:
    endpoint.healthy = True
    runtime = AlertingRuntime.start(settings, lambda: ops)
    mail = Arrival(smtp.mail, lambda m: m.subject, FIRED)
    post = Arrival(hook.got, lambda r: r.body.decode(), FIRED)
    mail.start()
    post.start()
    fault_at: list[float] = []
    cycles: list[float] = []

    def fault() -> None:
        fault_at.append(time.monotonic())
        endpoint.healthy = False

    try:
        start = time.monotonic()
        timer: threading.Timer | None = None
        phase = "healthy"
        fired_at: float | None = None   # the firing cycle's probes done: then observe, queue, send
        n = 0
        while True:
            c0 = time.monotonic()
            result = run_cycle(settings)
            probed = time.monotonic()
            queued = runtime.after_cycle(result).queued
            cycles.append(time.monotonic() - c0)
            if queued and phase == "armed" and fired_at is None:
                fired_at = probed
            n += 1
            if phase == "healthy" and n == 2:   # the fault at a random point of the next interval
                timer = threading.Timer(max(0.0, start + n * interval - time.monotonic()) + rng.random() * interval,
                                        fault)
                timer.start()
                phase = "armed"
            elif phase == "armed" and mail.done.is_set() and post.done.is_set():
                break
            if time.monotonic() - start > 60:
                raise SystemExit("no critical delivered within 60 s")
            time.sleep(max(0.0, start + n * interval - time.monotonic()))
        # Recover so the next run starts from a quiet state (resolve_after good samples).
        endpoint.healthy = True
        for _ in range(3):
            runtime.after_cycle(run_cycle(settings))
    finally:
        if timer is not None:
            timer.cancel()
        runtime.stop(drain_seconds=2)
        mail.done.set()
        post.done.set()
        smtp.mail.put(None)
        hook.got.put(None)
        mail.join(5)
        post.join(5)
    while not smtp.mail.empty():
        smtp.mail.get_nowait()
    while not hook.got.empty():
        hook.got.get_nowait()
    return {"email_s": round(mail.at - fault_at[0], 3), "webhook_s": round(post.at - fault_at[0], 3),
            "cycle_wall_s_median": round(statistics.median(cycles), 3),
            "deliver_email_s": round(mail.at - fired_at, 4), "deliver_webhook_s": round(post.at - fired_at, 4)}


def bench_latency(ops: str, runs: int, interval: float) -> dict:
    endpoint = Endpoint()
    rng = random.Random(12)
    out = []
    with SmtpSink() as smtp, HttpReceiver() as hook:
        settings = Settings(
            **CALM_HOST,
            endpoints=[{"name": "api-health", "service": "api", "url": endpoint.url,
                        "conditions": ["[STATUS] == 200"], "timeout_seconds": 2}],
            alerting={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_starttls": False,
                      "email_from": "bvh-ops@localhost", "email_to": ["oncall@localhost"],
                      "webhook_url": hook.url + "/services/bench", "webhook_format": "slack",
                      "timeout_seconds": 3,
                      "digest_at": (datetime.now(UTC) + timedelta(hours=1)).strftime("%H:%M")})
        for i in range(runs):
            r = latency_run(settings, endpoint, smtp, hook, ops, interval, rng)
            print(f"run {i + 1}: fault -> email {r['email_s']} s, -> webhook {r['webhook_s']} s "
                  f"(cycle {r['cycle_wall_s_median']} s)", flush=True)
            out.append(r)
    endpoint.server.shutdown()
    email = [r["email_s"] for r in out]
    hook_s = [r["webhook_s"] for r in out]
    cycle = statistics.median(r["cycle_wall_s_median"] for r in out)
    return {"runs": runs, "interval_s": interval, "fire_after": FIRE_AFTER, "per_run": out,
            "email_s_median": round(statistics.median(email), 3), "email_s_min": min(email),
            "email_s_max": max(email),
            "webhook_s_median": round(statistics.median(hook_s), 3), "webhook_s_min": min(hook_s),
            "webhook_s_max": max(hook_s), "cycle_wall_s_median": round(cycle, 3),
            "deliver_email_s_median": round(statistics.median(r["deliver_email_s"] for r in out), 4),
            "deliver_webhook_s_median": round(statistics.median(r["deliver_webhook_s"] for r in out), 4)}


def checks(n: int) -> list[Check]:
    return [Check(f"ep-{i:04}", "api", Status.CRITICAL, 503, "", "HTTP 503") for i in range(n)]


def bench_cost(ops: str | None, n: int, steady_cycles: int) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    digest_at = (now + timedelta(hours=1)).time().replace(second=0)   # no digest owed during the bench
    persistence = Persistence(lambda: ops) if ops else None
    snapshot = persistence.open(now) if persistence else None
    alerter = Alerter(["webhook"], digest_at=digest_at, snapshot=snapshot)
    bad = checks(n)
    res: dict = {"alerts": n}

    def cycle(at: datetime) -> tuple[float, float, int]:
        w, c = time.perf_counter(), time.process_time()
        out = alerter.observe(bad, at)
        return time.perf_counter() - w, time.process_time() - c, len(out.queued)

    res["first_cycle_s"] = round(cycle(now)[0], 4)                    # pending
    if persistence:
        t = time.perf_counter()
        persistence.sync(alerter, now)
        res["sync_pending_cycle_s"] = round(time.perf_counter() - t, 3)
    now += timedelta(seconds=30)
    wall, cpu, queued = cycle(now)                                   # fires: 1,000 events and notices
    res.update(firing_cycle_s=round(wall, 4), firing_cycle_cpu_s=round(cpu, 4), queued=queued)
    if persistence:
        t = time.perf_counter()
        problem = persistence.sync(alerter, now)
        res["sync_firing_cycle_s"] = round(time.perf_counter() - t, 3)
        if problem:
            raise SystemExit(problem)

    with HttpReceiver() as hook:
        channel = WebhookChannel(hook.url + "/services/bench", "slack", timeout=5)
        recorded = (lambda: persistence.sync(alerter, datetime.now(UTC))) if persistence else None
        deliverer = Deliverer(alerter, [channel], recorded=recorded)
        t = time.perf_counter()
        sent = deliverer.deliver("webhook", now)
        res["deliver_s"] = round(time.perf_counter() - t, 2)
        res["delivered"] = sent
        res["received"] = hook.got.qsize()
        res["deliver_ms_per_notice"] = round(1000 * res["deliver_s"] / max(sent, 1), 2)
        res["deliver_writes_log_through"] = bool(persistence)

    # The same delivery without the write-through (an alerter without the ops database).
    bare = Alerter(["webhook"], digest_at=digest_at)
    bare.observe(bad, now - timedelta(seconds=30))
    bare.observe(bad, now)
    with HttpReceiver() as hook:
        deliverer = Deliverer(bare, [WebhookChannel(hook.url + "/services/bench", "slack", timeout=5)])
        t = time.perf_counter()
        sent = deliverer.deliver("webhook", now)
        res["deliver_without_log_s"] = round(time.perf_counter() - t, 2)
        if sent != n or hook.got.qsize() != n:
            raise SystemExit(f"delivered {sent}, received {hook.got.qsize()} of {n}")

    walls, cpus = [], []
    for _ in range(steady_cycles):                                   # still firing: nothing new
        now += timedelta(seconds=30)
        wall, cpu, queued = cycle(now)
        if queued:
            raise SystemExit(f"steady state queued {queued}")
        walls.append(wall)
        cpus.append(cpu)
        if persistence:
            t = time.perf_counter()
            persistence.sync(alerter, now)
            res.setdefault("sync_steady_s", []).append(time.perf_counter() - t)
    res.update(steady_cycles=steady_cycles, steady_cycle_s_median=round(statistics.median(walls), 4),
               steady_cycle_s_max=round(max(walls), 4), steady_cycle_cpu_s_median=round(statistics.median(cpus), 4))
    if persistence:
        s = res.pop("sync_steady_s")
        res["sync_steady_s_median"] = round(statistics.median(s), 3)
        persistence.close()
    res["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if ops:
        with psycopg.connect(ops) as conn:
            res["rows"] = {t: conn.execute(f"SELECT count(*) FROM ops.{t}").fetchone()[0]
                           for t in ("alert_states", "alert_events", "notifications", "incidents")}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--alerts", type=int, default=1000)
    ap.add_argument("--steady-cycles", type=int, default=10)
    ap.add_argument("--workdir", default="/tmp/bvh-bench-alerting")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    cluster = EmbeddedCluster(work / "pg")
    cluster.start()
    try:
        # The cost first: the peak RSS is the notifier's with 1,000 alerts, before the probes.
        cost = bench_cost(fresh_database(cluster, "bench_alerts_cost"), args.alerts, args.steady_cycles)
        print(f"cost: {cost}", flush=True)
        latency = bench_latency(fresh_database(cluster, "bench_alerts_latency"), args.runs, args.interval)
    finally:
        cluster.stop()
    # The fault lands uniformly in an interval: the next cycle sees the first bad sample after
    # (0..1) x interval, the fire_after-th one (fire_after - 1) intervals later, then its probes
    # and the delivery. With a real endpoint the probe time is bounded by its timeout instead.
    tail = latency["cycle_wall_s_median"] + max(latency["deliver_email_s_median"], latency["deliver_webhook_s_median"])
    latency["runbook_30s"] = {
        "interval_s": RUNBOOK_INTERVAL,
        "worst_s": round(FIRE_AFTER * RUNBOOK_INTERVAL + tail, 1),
        "mean_s": round((FIRE_AFTER - 0.5) * RUNBOOK_INTERVAL + tail, 1),
        "best_s": round((FIRE_AFTER - 1) * RUNBOOK_INTERVAL + tail, 1)}
    save_result("alerting", {"machine": machine(), "latency": latency, "cost": cost,
                             "total_seconds": round(time.monotonic() - t0, 1)})


if __name__ == "__main__":
    main()
