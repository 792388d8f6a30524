"""Every detector measured on the real sample platform: normal traffic from the workload driver
with each pattern planted among it (bvh_ops/demo/planter.py), the platform's real JSON log lines
as Records, the platform database for the ledger detectors. The bar: every planted case found
(recall 1.0) and false positives at most a few percent of the subjects normal traffic produced."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.config import LogAnalysisSettings
from bvh_ops.demo.planter import KNOWN_BAD, PATTERNS, plant
from bvh_ops.demo.platform import WorkloadDriver, read_lines, serve_platform
from bvh_ops.demo.sample import load_sample
from bvh_ops.logs.analysis.analyze import analyze
from bvh_ops.logs.analysis.platform_lines import records_from_platform_lines
from bvh_ops.pg.catalog import create_database
from tests.waiting import wait_until

NORMAL_USERS = 40  # users 41..50 are the planter's
MAX_FP_RATE = 0.03


@pytest.fixture(scope="module")
def analysis_db(pg) -> str:
    create_database(pg.dsn(), "analysis_sample")
    load_sample(pg.dsn("analysis_sample"), scale=0.05)
    yield pg.dsn("analysis_sample")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "analysis_sample" WITH (FORCE)')


@pytest.fixture(scope="module")
def run(analysis_db, tmp_path_factory):
    """Normal traffic, every pattern planted in the middle of it, then the analysis."""
    log = tmp_path_factory.mktemp("analysis") / "platform.jsonl"
    cfg = LogAnalysisSettings(known_bad_ips=[KNOWN_BAD])
    with serve_platform(analysis_db, "127.0.0.1", 0, log) as handle:
        start = datetime.now(UTC)
        with WorkloadDriver(handle.url, users=NORMAL_USERS, rate=25.0, threads=2) as work:
            wait_until(lambda: work.stats.purchases >= 100, "normal traffic under way", timeout=120)
            truth = plant(handle.url, analysis_db, PATTERNS, business_hours=cfg.business_hours,
                          business_days=cfg.business_days)
            time.sleep(3)
        assert work.stats.errors == 0, work.stats
    now = datetime.now(UTC) + timedelta(seconds=1)
    records = records_from_platform_lines(read_lines(log))
    with psycopg.connect(analysis_db) as conn:
        doc = analyze(records, conn, cfg, since=start - timedelta(days=8), now=now)
    return truth, doc, list(records_from_platform_lines(read_lines(log))), analysis_db, start


def _universe(records, dsn: str, since: datetime) -> dict[str, set[str]]:
    """The subjects normal and planted traffic produced, per kind."""
    ips = {f"ip:{r.fields['ip']}" for r in records if r.fields.get("ip")}
    accounts = {f"account:{r.fields.get('userId') or r.fields.get('email')}" for r in records
                if r.event.startswith(("auth.", "wallet.", "ticket."))}
    endpoints = {f"endpoint:{r.fields.get('method')} {r.fields['path']}" for r in records
                 if r.event == "request.completed"}
    with psycopg.connect(dsn) as conn:
        admins = {f"admin:{a}" for (a,) in conn.execute(
            "SELECT DISTINCT admin_user FROM admin_actions WHERE created_at >= %s", (since,))}
        actions = {f"action:{a}" for (a,) in conn.execute(
            "SELECT id FROM admin_actions WHERE created_at >= %s AND action = 'adjust_balance'", (since,))}
        wallets = {f"account:{u}" for (u,) in conn.execute(
            "SELECT DISTINCT w.user_id FROM transactions t JOIN wallets w ON w.id = t.wallet_id "
            "WHERE t.created_at >= %s", (since,))}
    admins |= {f"admin:{r.fields['ip']}" for r in records if r.event.startswith("admin.")}
    return {"brute_force": ips | accounts, "credential_stuffing": ips, "known_bad_ip": ips,
            "access_violations": ips, "shared_ip": ips, "structuring": accounts, "purchase_velocity": accounts,
            "slow_endpoint": endpoints, "deposit_withdrawal_no_play": wallets, "admin_off_hours": admins,
            "admin_balance_without_transaction": actions}


def test_every_detector_finds_every_planted_case_with_few_false_positives(run):
    truth, doc, records, dsn, start = run
    universe = _universe(records, dsn, start - timedelta(days=8))
    rows, failures = [], []
    for detector in PATTERNS:
        found = {f["subject"] for f in doc["findings"] if f["detector"] == detector}
        planted = truth[detector]
        tp, fp = found & planted, found - planted
        negatives = max(1, len(universe[detector] - planted))
        recall = len(tp) / len(planted)
        precision = len(tp) / len(found) if found else 1.0
        fp_rate = len(fp) / negatives
        rows.append((detector, len(planted), len(tp), len(fp), negatives, precision, recall, fp_rate))
        if recall < 1.0 or fp_rate > MAX_FP_RATE:
            failures.append(f"{detector}: planted {sorted(planted)} found {sorted(found)}")
    table = ["| detector | planted | found | false pos. | normal subjects | precision | recall | FP rate |",
             "|---|---|---|---|---|---|---|---|"]
    table += [f"| {d} | {p} | {t} | {f} | {n} | {pr:.2f} | {rc:.2f} | {fr:.1%} |"
              for d, p, t, f, n, pr, rc, fr in rows]
    print("\n" + "\n".join(table))
    assert not failures, failures
    assert all(f["evidence"] and len(f["evidence"]) <= 5 for f in doc["findings"])


def test_findings_carry_evidence_from_the_platforms_real_lines(run):
    truth, doc, *_ = run
    (brute,) = [f for f in doc["findings"] if f["detector"] == "brute_force" and f["subject"] == "ip:203.0.113.10"]
    assert brute["severity"] == "critical" and brute["count"] == 14
    assert all(e["event"] == "auth.login_failed" and e["ip"] == "203.0.113.10" for e in brute["evidence"])
    assert {s["detector"] for s in doc["skipped"]} == {"new_country", "degradation"}
    slow = [r for r in doc["performance"] if r["endpoint"] == "GET /api/wallet"]
    assert slow and slow[0]["p50"] >= 1300
