"""Each detector on synthetic records: thresholds exactly met and just missed, window boundaries,
records a little out of order, and the skip when the input lacks a field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.config import LogAnalysisSettings
from bvh_ops.logs.analysis.analyze import alert_findings, analyze
from bvh_ops.logs.analysis.detection import run
from bvh_ops.logs.analysis.fraud import PurchaseVelocity, SharedIp, Structuring
from bvh_ops.logs.analysis.histogram import Histogram
from bvh_ops.logs.analysis.ledger import AdminBalance, DepositWithdrawal
from bvh_ops.logs.analysis.performance import EndpointHours, degradation
from bvh_ops.logs.analysis.platform_lines import records_from_platform_lines
from bvh_ops.logs.analysis.security import (
    AccessViolations,
    AdminOffHours,
    BruteForce,
    CredentialStuffing,
    KnownBadIps,
    NewCountry,
)
from bvh_ops.logs.record import Record

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a Tuesday
CFG = LogAnalysisSettings(brute_force_failures=5, brute_force_minutes=10, stuffing_accounts=4, stuffing_minutes=10,
                          forbidden_spike=5, forbidden_minutes=5, known_bad_ips=["203.0.113.0/24"])


def rec(event: str, at: datetime = T0, category: str = "security", **fields) -> Record:
    return Record(at=at, category=category, source="test", event=event, fields=fields)


def failed(at, ip="10.0.0.1", email="a@x", user=None):
    return rec("auth.login_failed", at, ip=ip, email=email, userId=user, reason="bad_password")


def subjects(found):
    return sorted(f.subject for f in found)


@pytest.mark.parametrize("spacing_s, n, found", [
    (60, 5, True),            # exactly N within the window
    (60, 4, False),           # one short
    (150, 5, True),           # 5 spread over exactly 10 min: the window is inclusive
    (151, 5, False),          # 5 over 10 min 4 s: never 5 in one window
])
def test_brute_force_threshold_and_window_boundary(spacing_s, n, found):
    records = [failed(T0 + timedelta(seconds=i * spacing_s)) for i in range(n)]
    got = run(BruteForce(CFG), records, T0 + timedelta(hours=1))
    assert subjects(got) == (["account:a@x", "ip:10.0.0.1"] if found else [])


def test_brute_force_tolerates_records_slightly_out_of_order_and_counts_the_whole_attack():
    times = [0, 60, 30, 120, 90, 150, 200]  # seconds; late arrivals within the lateness allowance
    got = run(BruteForce(CFG), [failed(T0 + timedelta(seconds=s), user=7) for s in times], T0)
    (acct, ip) = got
    assert acct.subject == "account:7" and ip.subject == "ip:10.0.0.1"
    assert acct.count == 7 and acct.first_seen == T0 and acct.last_seen == T0 + timedelta(seconds=200)
    assert acct.severity == "critical" and 1 <= len(acct.evidence) <= CFG.evidence_records


def test_brute_force_evidence_is_bounded_for_a_long_attack():
    got = run(BruteForce(CFG), [failed(T0 + timedelta(seconds=i)) for i in range(5000)], T0)
    assert all(len(f.evidence) == CFG.evidence_records and f.count == 5000 for f in got)


def test_credential_stuffing_counts_distinct_accounts_per_ip():
    many = [failed(T0 + timedelta(seconds=i), ip="10.9.9.9", email=f"u{i}@x") for i in range(4)]
    same = [failed(T0 + timedelta(seconds=i), ip="10.8.8.8", email="same@x") for i in range(4)]
    spread = [failed(T0 + timedelta(minutes=11 * i), ip="10.7.7.7", email=f"v{i}@x") for i in range(4)]
    got = run(CredentialStuffing(CFG), sorted(many + same + spread, key=lambda r: r.at), T0)
    assert subjects(got) == ["ip:10.9.9.9"]


def test_access_violations_403_spike():
    denied = [rec("access.denied", T0 + timedelta(seconds=i), ip="10.1.1.1", status=403) for i in range(5)]
    few = [rec("access.denied", T0 + timedelta(seconds=i), ip="10.2.2.2", status=403) for i in range(4)]
    assert subjects(run(AccessViolations(CFG), denied + few, T0)) == ["ip:10.1.1.1"]


def test_known_bad_ips_match_networks_and_ignore_garbage():
    records = [rec("auth.login", ip="203.0.113.9"), rec("auth.login", ip="10.0.0.1"), rec("auth.login", ip="nope")]
    assert subjects(run(KnownBadIps(CFG), records, T0)) == ["ip:203.0.113.9"]
    assert run(KnownBadIps(LogAnalysisSettings()), records, T0) == []


@pytest.mark.parametrize("at, off", [
    (datetime(2026, 11, 24, 10, 0, tzinfo=UTC), False),   # Tuesday 10:00
    (datetime(2026, 11, 24, 5, 59, tzinfo=UTC), True),    # before 06:00
    (datetime(2026, 11, 24, 18, 0, tzinfo=UTC), True),    # the end hour is outside
    (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), True),    # Saturday
    (datetime(2026, 11, 29, 10, 0, tzinfo=UTC), False),   # Sunday is a business day (default)
])
def test_admin_off_hours(at, off):
    got = run(AdminOffHours(CFG), [rec("admin.ban_user", at, category="audit", admin="dana")], T0)
    assert subjects(got) == (["admin:dana"] if off else [])


def test_new_country_skips_without_a_country_field_and_finds_one_with_it():
    d = NewCountry(CFG)
    assert run(d, [rec("auth.login", userId=1, ip="10.0.0.1")], T0) == [] and "country" in d.skipped
    logins = [rec("auth.login", T0, userId=1, country="IL"), rec("auth.login", T0, userId=1, country="IL"),
              rec("auth.login", T0, userId=2, country="FR"), rec("auth.login", T0, userId=1, country="RU")]
    d = NewCountry(CFG)
    assert subjects(run(d, logins, T0)) == ["account:1"] and d.skipped is None


def deposit(at, user, amount):
    return rec("wallet.deposit", at, category="audit", userId=user, amount=amount)


@pytest.mark.parametrize("amounts, found", [
    ([4600, 4700, 4999.99], True),   # three within 10 % under 5000
    ([4600, 4700], False),           # two are not a pattern
    ([4499.99, 4700, 4800], False),  # one is below the band
    ([4600, 4700, 5000], False),     # at the threshold is reported anyway, not structured
])
def test_structuring(amounts, found):
    records = [deposit(T0 + timedelta(minutes=i), 9, a) for i, a in enumerate(amounts)]
    assert subjects(run(Structuring(CFG), records, T0)) == (["account:9"] if found else [])


def test_structuring_counts_per_utc_day():
    midnight = datetime(2026, 11, 25, tzinfo=UTC)
    records = [deposit(midnight - timedelta(minutes=2), 9, 4800), deposit(midnight - timedelta(minutes=1), 9, 4800),
               deposit(midnight + timedelta(minutes=1), 9, 4800)]
    assert run(Structuring(CFG), records, T0) == []


def test_shared_ip_counts_distinct_accounts():
    logins = [rec("auth.login", T0, ip="10.5.5.5", userId=u) for u in (1, 2, 3, 4, 5, 5, 5)]
    logins += [rec("auth.login", T0, ip="10.6.6.6", userId=u) for u in (1, 2, 3, 4, 4)]
    got = run(SharedIp(CFG), logins, T0)
    assert subjects(got) == ["ip:10.5.5.5"] and got[0].count == 7 and len(got[0].evidence) == 5


def test_purchase_velocity_against_the_population():
    records = [rec("ticket.purchase", T0 + timedelta(seconds=i), category="audit", userId=u)
               for u in range(1, 21) for i in range(5 + u % 3)]
    records += [rec("ticket.purchase", T0 + timedelta(seconds=i), category="audit", userId=99) for i in range(40)]
    records += [rec("ticket.purchase", T0 + timedelta(seconds=i), category="audit", userId=98) for i in range(12)]
    assert subjects(run(PurchaseVelocity(CFG), records, T0)) == ["account:99"]


def test_percentiles_per_endpoint_hour_and_slow_endpoints():
    records = [rec("request.completed", T0 + timedelta(seconds=i), category="performance", method="POST",
                   path="/api/tickets", durationMs=float(i % 100 + 1), status=201) for i in range(1000)]
    records += [rec("request.completed", T0 + timedelta(seconds=i), category="performance", method="GET",
                    path="/api/wallet", durationMs=1500.0, status=200) for i in range(30)]
    d = EndpointHours(CFG)
    got = run(d, records, T0)
    assert subjects(got) == ["endpoint:GET /api/wallet"] and got[0].count == 30
    row = next(r for r in d.table() if r["endpoint"] == "POST /api/tickets")
    assert row["count"] == 1000
    for q, exact in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert exact <= row[q] <= exact * 1.021


def test_histogram_ignores_broken_values():
    h = Histogram()
    for v in (float("nan"), float("inf"), -1.0, 0.5, 10.0):
        h.add(v)
    assert h.count == 2 and h.percentile(100) == 10.0 and Histogram().percentile(95) is None


def test_degradation_against_the_previous_week():
    def hour(at, ms, n=30):
        return [rec("request.completed", at + timedelta(seconds=i), category="performance", path="/api/tickets",
                    method="POST", durationMs=ms) for i in range(n)]
    now, before = EndpointHours(CFG), EndpointHours(CFG)
    run(now, hour(T0, 300.0) + hour(T0 + timedelta(hours=1), 110.0), T0)
    run(before, hour(T0 - timedelta(days=7), 100.0) + hour(T0 - timedelta(days=7, hours=-1), 100.0), T0)
    got = degradation(now, before, CFG)
    assert subjects(got) == ["endpoint:POST /api/tickets"] and got[0].count == 30
    assert degradation(now, EndpointHours(CFG), CFG) == []


def txn(at, kind, user, amount, **meta):
    return rec(f"txn.{kind}", at, category="audit", userId=user, walletId=user, amount=amount, metadata=meta)


@pytest.mark.parametrize("played, hours, found", [(0, 2, True), (90, 2, True), (150, 2, False), (0, 49, False)])
def test_deposit_then_withdrawal_with_little_play(played, hours, found):
    records = [txn(T0, "deposit", 5, 1000)]
    if played:
        records.append(txn(T0 + timedelta(minutes=5), "ticket_purchase", 5, -played))
    records.append(txn(T0 + timedelta(hours=hours), "withdrawal", 5, -900))
    assert subjects(run(DepositWithdrawal(CFG), records, T0)) == (["account:5"] if found else [])


def admin(at, action_id, wallet, amount, action="adjust_balance"):
    return rec(f"admin.{action}", at, category="audit", actionId=action_id, admin="dana", target=f"wallet:{wallet}",
               amount=amount)


def test_admin_balance_change_needs_a_matching_transaction():
    records = [admin(T0, 1, 5, 500.0), txn(T0 + timedelta(minutes=2), "refund", 5, 500.0),     # matched by amount
               txn(T0 + timedelta(minutes=3), "refund", 6, 70.0, admin_action=2),            # txn first, by metadata
               admin(T0 + timedelta(minutes=4), 2, 6, 75.0),
               admin(T0 + timedelta(minutes=5), 3, 7, 900.0),                                 # never matched
               admin(T0 + timedelta(minutes=6), 4, 7, 900.0, action="ban_user"),              # not a balance action
               admin(T0 + timedelta(minutes=50), 5, 8, 10.0)]                                 # undecided yet
    got = run(AdminBalance(CFG), records, T0 + timedelta(minutes=55))
    assert subjects(got) == ["action:3"] and got[0].severity == "critical"
    assert subjects(run(AdminBalance(CFG), records, T0 + timedelta(hours=2))) == ["action:3", "action:5"]


def test_analyze_runs_every_detector_in_one_pass_and_says_what_it_skipped():
    records = [failed(T0 + timedelta(seconds=i), ip="10.3.3.3", email=f"u{i}@x") for i in range(6)]
    records.append(rec("request.completed", T0, category="performance", path="/x", durationMs=5.0))
    records.append(failed(T0 - timedelta(days=2)))  # before `since`: not analysed
    doc = analyze(records, None, CFG, since=T0 - timedelta(hours=1), now=T0 + timedelta(hours=1))
    assert doc["records"] == 7
    assert {(f["detector"], f["subject"]) for f in doc["findings"]} == {
        ("brute_force", "ip:10.3.3.3"), ("credential_stuffing", "ip:10.3.3.3")}
    assert {s["detector"] for s in doc["skipped"]} == {"new_country", "deposit_withdrawal_no_play",
                                                       "admin_balance_without_transaction", "degradation"}
    alerts = alert_findings(doc["findings"] + [{**doc["findings"][0], "subject": "endpoint:GET /api/x y"}])
    assert {a.key for a in alerts} >= {"brute_force:ip:10.3.3.3", "brute_force:endpoint:GET_/api/x_y"}


def test_platform_lines_become_records():
    (r,) = records_from_platform_lines([{"timestamp": "2026-11-24T12:00:00.123Z", "level": "warning",
                                          "category": "security", "event": "auth.login_failed", "service": "api",
                                          "email": "a@x", "ip": "10.0.0.1"}])
    assert r.at == T0 + timedelta(milliseconds=123) and r.event == "auth.login_failed"
    assert r.fields == {"email": "a@x", "ip": "10.0.0.1"} and r.level == "warning"


def test_weekly_reports_render_tables_and_a_chart():
    from bvh_ops.logs.analysis.report import performance_markdown, security_markdown

    records = [failed(T0 + timedelta(seconds=i), ip="10.3.3.3") for i in range(6)]
    records += [rec("request.completed", T0 + timedelta(hours=h, seconds=i), category="performance", method="GET",
                    path="/api/draws", durationMs=10.0 * (h + 1)) for h in range(3) for i in range(30)]
    doc = analyze(records, None, CFG, since=T0 - timedelta(hours=1), now=T0 + timedelta(hours=4))
    sec, perf = security_markdown(doc), performance_markdown(doc)
    assert "| critical | brute_force | ip:10.3.3.3 |" in sec and "skipped degradation" in sec
    assert "| GET /api/draws |" in perf and "<svg" in perf
