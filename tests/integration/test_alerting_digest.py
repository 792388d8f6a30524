"""The daily digest gathered from real sources: a file:// repository holding a real logical backup,
a migrated ops database with a drill, an incident, fired alerts and probe samples, and the sample
lottery platform (demo schema) with registrations and purchases in the window and the day before.
The figures the digest prints equal what SQL counts independently; a failing source becomes a
note naming why, without hiding the others and without a password."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from pydantic import SecretStr

from bvh_ops.alerting.digest import gather_digest, render_digest
from bvh_ops.demo.sample import load_sample, record_purchase
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.store import record_cycle
from bvh_ops.opsdb.migrations import migrate

NOW = datetime.now(UTC)
END = NOW.replace(second=0, microsecond=0) + timedelta(hours=3)  # the backup the test takes is inside (collected hours early on a loaded machine included)
START = END - timedelta(days=1)


def section(lines, title):
    i = lines.index(title)
    out = []
    for line in lines[i + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.strip())
    return out


@pytest.fixture
def platform(fresh_db):
    """The sample lottery (small scale: its rows are months old) plus users and tickets in the
    window, the day before it and earlier, written the way the platform writes them."""
    dsn = fresh_db("_platform")
    load_sample(dsn, scale=0.05)
    with psycopg.connect(dsn) as conn:
        for i, at in enumerate([START + timedelta(hours=1), START + timedelta(hours=9), END - timedelta(hours=1),
                                START - timedelta(hours=3), START - timedelta(days=3)]):
            conn.execute("INSERT INTO users (email, display_name, country, created_at) VALUES (%s, %s, 'IL', %s)",
                         (f"digest{i}@example.org", f"Digest {i}", at))
        user = conn.execute("SELECT id FROM users WHERE email = 'digest0@example.org'").fetchone()[0]
        conn.execute("INSERT INTO wallets (user_id, balance, updated_at) VALUES (%s, 100, now())", (user,))
        for i in range(3):  # bought now(): in the window
            record_purchase(conn, user_id=user, draw_id=1, numbers=[1, 2, 3, 4, 5, 6], reference=f"digest-{i}")
        conn.execute("INSERT INTO tickets (user_id, draw_id, numbers, price, purchased_at, status) "
                     "VALUES (%s, 1, '{1,2,3,4,5,6}', 29.50, %s, 'active'), (%s, 1, '{1,2,3,4,5,7}', 11.80, %s, 'active')",
                     (user, START - timedelta(hours=2), user, START - timedelta(days=2)))
        conn.commit()
    return dsn


@pytest.fixture
def ops_db(fresh_db):
    dsn = fresh_db("_ops")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            "INSERT INTO ops.drills (drill_id, started_at, finished_at, backup_id, mode, passed, rto_seconds, "
            "rpo_seconds, rto_objective_seconds, rpo_objective_seconds, report) VALUES "
            "('drill-digest-1', %s, %s, 'b', 'logical', true, 754, 420, 14400, 3600, %s), "
            "('drill-old', %s, %s, 'b', 'logical', false, NULL, NULL, 14400, 3600, '{}')",
            (NOW - timedelta(hours=2, minutes=13), NOW - timedelta(hours=2), json.dumps({}),
             START - timedelta(hours=5), START - timedelta(hours=4)))
        conn.execute(
            "INSERT INTO ops.incidents (fingerprint, name, service, check_name, started_at, ended_at) VALUES "
            "('fp1', 'system down', 'api', 'api-health', %s, %s), "
            "('fp2', 'old outage', 'api', 'api-health', %s, %s)",
            (NOW - timedelta(hours=5), NOW - timedelta(hours=4, minutes=48),
             START - timedelta(days=2), START - timedelta(days=2) + timedelta(minutes=5)))
        for fp, sev, at in (("fp1", "critical", NOW - timedelta(hours=5)), ("fp3", "warning", NOW - timedelta(hours=1)),
                            ("fp4", "warning", NOW - timedelta(hours=2)), ("fp5", "critical", START - timedelta(hours=1))):
            conn.execute("INSERT INTO ops.alert_events (fingerprint, kind, at, name, severity, service, check_name) "
                         "VALUES (%s, 'fired', %s, 'n', %s, 'api', 'c')", (fp, at, sev))
        conn.execute("INSERT INTO ops.security_runs (run_id, kind, started_at, finished_at, status, counts, "
                     "not_checked) VALUES ('scan-1', 'scan', %s, %s, 'warning', %s, 0), "
                     "('scan-old', 'scan', %s, %s, 'passed', '{}', 0)",
                     (NOW - timedelta(hours=3, minutes=1), NOW - timedelta(hours=3),
                      json.dumps({"critical": 0, "high": 0, "medium": 2, "low": 1, "info": 0}),
                      START - timedelta(hours=2), START - timedelta(hours=2)))
        for i in range(4):  # api down one cycle of four; database up
            at = NOW - timedelta(minutes=30) + i * timedelta(seconds=30)
            record_cycle(conn, CycleResult(Status.OK, at, [
                Check("api-health", "api", Status.CRITICAL if i == 1 else Status.OK, 10.0 * (i + 1), "ms", ""),
                Check("db.reachable", "database", Status.OK, 1.0, "", "")], 0.1, 0.05, []))
    return dsn


def _independent(dsn):
    with psycopg.connect(dsn) as conn:
        users = conn.execute("SELECT count(*) FROM users WHERE created_at >= %s AND created_at < %s",
                             (START, END)).fetchone()[0]
        users_before = conn.execute("SELECT count(*) FROM users WHERE created_at >= %s AND created_at < %s",
                                    (START - timedelta(days=1), START)).fetchone()[0]
        tickets, revenue = conn.execute("SELECT count(*), sum(price) FROM tickets WHERE purchased_at >= %s "
                                        "AND purchased_at < %s", (START, END)).fetchone()
    return users, users_before, tickets, revenue


def test_digest_names_backups_drills_incidents_and_the_platform_figures(fresh_db, platform, ops_db, repo_dir,
                                                                        make_settings):
    small = fresh_db("_src")
    with psycopg.connect(small, autocommit=True) as conn:
        conn.execute("CREATE TABLE draws (id int PRIMARY KEY)")
        conn.execute("INSERT INTO draws SELECT generate_series(1, 20)")
    manifest = run_logical_backup(make_settings(small, f"file://{repo_dir}")).manifest
    settings = make_settings(platform, f"file://{repo_dir}", endpoints=[
        {"name": "api-health", "service": "api", "url": "http://127.0.0.1:9/api/health"}])

    facts = gather_digest(settings, START, END, ops_dsn=ops_db)
    assert facts.notes == ()
    lines = render_digest(facts, START, END)

    (b,) = section(lines, "Backups")
    assert b.startswith(f"{manifest.backup_id} (logical) finished ")
    assert "checks: 2 passed, 0 failed, 1 not verified" in b        # signature, objects; sha256 not read
    assert facts.backups[0].size_bytes == manifest.bytes_stored
    (d,) = section(lines, "Drills")
    assert d.startswith("drill-digest-1 (logical)") and ": PASSED, RTO 12 min 34 s (objective 4 h: met)" in d
    (i,) = section(lines, "Incidents")
    assert i.startswith("system down on api: ") and i.endswith("(12 min)")
    assert section(lines, "Alerts") == ["fired in the window: 1 critical, 2 warning, 0 info"]
    assert section(lines, "Uptime") == ["api: 75.000 %", "database: 100.000 %"]
    # avg of 10..40 ms; p95 as PostgreSQL's percentile_cont: 38.5 ms
    assert section(lines, "Performance") == ["api-health: avg 25 ms, p95 38 ms, max 40 ms (4 probes)"]
    (sec,) = section(lines, "Security")  # the run before the window is not in it
    assert sec.startswith("scan finished ") and sec.endswith(": WARNING, findings 0 critical, 0 high, 2 medium, "
                                                             "1 low, 0 info")

    users, users_before, tickets, revenue = _independent(platform)
    assert (users, users_before, tickets, revenue) == (3, 1, 3, Decimal("17.70"))  # the fixture's rows
    assert section(lines, "Business") == [
        f"registrations: {users} (previous 24 h: {users_before}, up 200.0 %)",
        f"tickets sold: {tickets} (previous 24 h: 1, up 200.0 %)",
        f"revenue (ticket sales): {revenue:,.2f} (previous 24 h: 29.50, down 40.0 %)"]


def test_each_failing_source_is_a_note_and_hides_no_other(fresh_db, platform, make_settings, tmp_path):
    unmigrated = fresh_db("_empty")
    settings = make_settings(platform, f"file://{tmp_path / 'repo'}")
    facts = gather_digest(settings.model_copy(update={"repository": None}), START, END, ops_dsn=unmigrated)
    lines = render_digest(facts, START, END)
    assert section(lines, "Backups") == ["UNKNOWN: could not be read (repository is not set)"]
    assert section(lines, "Drills") == ['UNKNOWN: could not be read (relation "ops.drills" does not exist)']
    assert section(lines, "Incidents") == ['UNKNOWN: could not be read (relation "ops.incidents" does not exist)']
    assert section(lines, "Business")[0].startswith("registrations: 3 ")      # still read

    # the platform database unreachable (a password in its DSN), no ops database, no platform tables
    secret = "Sup3rSecretPw"
    unreachable = settings.model_copy(update={"database_url": SecretStr(
        f"postgresql://bvh:{secret}@127.0.0.1:1/lottery")})
    facts = gather_digest(unreachable, START, END, ops_dsn=None)
    text = "\n".join(render_digest(facts, START, END))
    assert secret not in text and secret not in " ".join(map(str, facts.notes))
    assert "UNKNOWN: could not be read (platform database: database unreachable at 127.0.0.1:1" in text
    assert text.count("UNKNOWN: could not be read (ops database not running)") == 5
    assert section(text.splitlines(), "Backups") == ["no backup finished in the window"]   # empty repository, read

    no_tables = settings.model_copy(update={"database_url": SecretStr(unmigrated)})
    business = section(render_digest(gather_digest(no_tables, START, END, ops_dsn=None), START, END), "Business")
    assert business == ["registrations: UNKNOWN (could not be counted, see the note below)",
                        "tickets sold: UNKNOWN (could not be counted, see the note below)",
                        "revenue (ticket sales): UNKNOWN (could not be counted, see the note below)",
                        'note: relation "users" does not exist', 'note: relation "tickets" does not exist']
