"""Capacity planning against a real embedded PostgreSQL and a file:// repository: collect with an
injected clock over several simulated days while the sample database grows; the forecast
follows; the report renders its charts; findings reach alerting."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.capacity.charts import PNG_SIGNATURE
from bvh_ops.capacity.collect import collect
from bvh_ops.capacity.report import run_report
from bvh_ops.demo.sample import load_sample
from bvh_ops.opsdb.migrations import migrate

BASE = datetime(2026, 6, 20, 2, 30, tzinfo=UTC)   # after the sample data's year (2025-06 .. 2026-06)


@pytest.fixture
def setup(fresh_db, make_settings, repo_dir, tmp_path):
    platform = fresh_db("_platform")
    load_sample(platform, scale=0.05)
    ops = fresh_db("_ops")
    with psycopg.connect(ops, autocommit=True) as conn:
        migrate(conn)
    settings = make_settings(platform, f"file://{repo_dir}", disk_paths=[tmp_path],
                             capacity={"backfill_days": 20, "repository_quota_bytes": 10_000_000})
    return platform, ops, settings, repo_dir


def _backup(repo_dir, at: datetime, kind: str, size: int) -> None:
    d = repo_dir / "backups" / f"{at:%Y%m%dT%H%M%SZ}-{kind}-abcdef"
    d.mkdir(parents=True)
    (d / "data.zst").write_bytes(b"x" * size)
    (d / "manifest.json").write_bytes(b"{}")


def _grow(platform: str, at: datetime, tickets: int) -> None:
    with psycopg.connect(platform, autocommit=True) as conn:
        conn.execute("INSERT INTO tickets (user_id, draw_id, numbers, price, purchased_at, status) "
                     "SELECT 1 + g %% 10, 1, '{1,2,3,4,5,6}', 10, %s, 'active' FROM generate_series(1, %s) g",
                     (at, tickets))


def _value(ops: str, series: str, day) -> float | None:
    with psycopg.connect(ops) as conn:
        row = conn.execute("SELECT value FROM ops.capacity_samples WHERE series = %s AND day = %s",
                           (series, day)).fetchone()
    return row[0] if row else None


def test_collect_backfills_then_grows_and_the_forecast_follows(setup):
    platform, ops_dsn, settings, repo_dir = setup
    _backup(repo_dir, BASE - timedelta(days=5), "logical", 200_000)
    (repo_dir / "wal" / "1").mkdir(parents=True)
    (repo_dir / "wal" / "1" / "000000010000000000000001").write_bytes(b"w" * 50_000)

    reports = []
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        first = collect(settings, ops, now=BASE)
        assert first.backfilled > 0, first.skipped
        assert not [s for s in first.skipped if s[0] != "monitoring"], first.skipped
        names = {s.series for s in first.samples}
        assert {"db.bytes", "rows:public.tickets", "repo.bytes:dumps", "repo.bytes:wal", "repo.bytes",
                "connections.peak", "connections.max", "wal.position", "business.active_users",
                "business.tickets_per_day", f"disk.used:{settings.disk_paths[0]}"} <= names
        assert any(n.startswith("table.bytes:public.") for n in names)
        # The first report is not empty: the history came from the tickets' purchase times.
        doc, _ = run_report(settings, ops, now=BASE, with_charts=False)
        tickets = next(r for r in doc["resources"] if r["name"] == "rows:public.tickets")
        assert tickets["history_days"] >= 20 and tickets["status"] in ("ok", "unpredictable")

        for i in range(1, 10):
            now = BASE + timedelta(days=i)
            _grow(platform, now, 3000)
            _backup(repo_dir, now, "logical", 200_000 + 30_000 * i)
            collect(settings, ops, now=now)
            if i in (4, 9):
                reports.append(run_report(settings, ops, now=now)[0])

        # Idempotent per day: a second collection replaces the day's values, adds no row.
        n_before = ops.execute("SELECT count(*) FROM ops.capacity_samples").fetchone()[0]
        collect(settings, ops, now=BASE + timedelta(days=9, hours=3))
        assert ops.execute("SELECT count(*) FROM ops.capacity_samples").fetchone()[0] == n_before
        # Each report kept its forecasts, to be scored by later runs.
        assert ops.execute("SELECT count(DISTINCT made_on) FROM ops.capacity_forecasts").fetchone()[0] == 3

    day9 = (BASE + timedelta(days=9)).date()
    assert _value(ops_dsn, "business.tickets_per_day", day9) == 3000
    assert _value(ops_dsn, "wal.bytes_per_day", day9) > 0
    early, late = ({r["name"]: r for r in rep["resources"]} for rep in reports)
    t4, t9 = early["rows:public.tickets"], late["rows:public.tickets"]
    assert t9["current"] - t4["current"] == 5 * 3000
    assert t9["growth_per_month"] > t4["growth_per_month"] > 0   # the forecast moved with the growth
    assert late["db.bytes"]["current"] > early["db.bytes"]["current"]
    assert late["repo.bytes:dumps"]["current"] > early["repo.bytes:dumps"]["current"]
    # The repository quota (10 MB) is far off; its forecast carries a days-until or a reason.
    repo = late["repo.bytes"]
    assert repo["limit"] == 10_000_000 and repo["reason"]


def test_report_renders_charts_and_reports_findings(setup):
    from bvh_ops.alerting.findings import report_findings
    from bvh_ops.capacity.report import findings

    platform, ops_dsn, settings, repo_dir = setup
    settings = settings.model_copy(update={"capacity": settings.capacity.model_copy(
        update={"repository_quota_bytes": 1_000_000})})
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        for i in range(12):
            now = BASE + timedelta(days=i)
            _backup(repo_dir, now, "logical", 60_000)   # +60 kB/day towards a 1 MB quota
            collect(settings, ops, now=now)
        doc, md = run_report(settings, ops, now=BASE + timedelta(days=11))
        repo = next(r for r in doc["resources"] if r["name"] == "repo.bytes")
        assert repo["status"] in ("warning", "critical"), repo
        assert repo["days_until"]["low"] <= repo["days_until"]["expected"] <= (repo["days_until"]["high"] or 1e9)
        assert any(t.startswith("repository: raise the quota") and "dumps dominate growth" in t
                   for t in doc["recommendations"])
        pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
        assert pngs and all(base64.b64decode(p).startswith(PNG_SIGNATURE) for p in pngs)
        assert "### repo.bytes" in md
        counts = report_findings(ops, "capacity", findings(doc), BASE + timedelta(days=11))
        assert counts["active"] >= 1
        row = ops.execute("SELECT severity, title FROM ops.findings WHERE source = 'capacity' AND key = 'repo.bytes'"
                          ).fetchone()
        assert row[0] in ("warning", "critical") and "repo.bytes" in row[1]


def test_the_dashboard_shows_capacity_status_and_charts(setup, tmp_path):
    """The live dashboard's Capacity section from the same history (served for real, seen by a
    headless browser): the repository's status and its chart as a PNG."""
    from bvh_ops.capacity.view import OpsCapacityView
    from bvh_ops.monitoring.web import create_app
    from tests.integration.test_dashboard import Served, dump_dom
    from tests.waiting import wait_until

    platform, ops_dsn, settings, repo_dir = setup
    settings = settings.model_copy(update={"capacity": settings.capacity.model_copy(
        update={"repository_quota_bytes": 1_000_000}), "database_url": None, "repository": None,
        "monitor_interval_seconds": 2.0})
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        for i in range(12):
            _backup(repo_dir, BASE + timedelta(days=i), "logical", 60_000)
            collect(settings.model_copy(update={"repository": f"file://{repo_dir}"}), ops, now=BASE + timedelta(days=i))
    view = OpsCapacityView(settings, lambda: ops_dsn, clock=lambda: BASE + timedelta(days=11))
    served = Served(create_app(settings, capacity=view), "127.0.0.1")
    try:
        wait_until(lambda: served.state.cycles_run >= 1, "a probe cycle", timeout=60)
        import httpx

        api = httpx.get(served.url + "/api/capacity", timeout=60).json()
        assert next(r for r in api["resources"] if r["name"] == "repo.bytes")["status"] in ("warning", "critical")
        dom = dump_dom(served.url + "/", tmp_path)
        section = dom[dom.index('id="capacity"'):]
        assert "repo.bytes" in section and 'src="data:image/png;base64,' in section
    finally:
        served.stop()


def test_what_cannot_be_measured_is_named_and_nothing_false_is_stored(setup, tmp_path):
    """The review's cases: a main table whose time column holds epoch numbers only shortens the
    history (a warning, the collection still complete, the other tables backfilled); a repository
    root that does not exist is a failed measure, never 0 bytes stored; one disk path that cannot
    be measured costs only its own samples; an S3 store that cannot be opened fails its measure
    and everything else is still stored."""
    platform, ops_dsn, settings, repo_dir = setup
    with psycopg.connect(platform, autocommit=True) as conn:
        conn.execute("CREATE TABLE epochs (id int, created_at bigint); INSERT INTO epochs VALUES (1, 1750000000000)")
    cfg = settings.capacity.model_copy(update={"main_tables": ["public.epochs", "public.tickets"]})
    gone = tmp_path / "not-mounted"
    odd = settings.model_copy(update={"capacity": cfg, "repository": f"file://{gone}",
                                      "disk_paths": [tmp_path, tmp_path / "no-such-mount"]})
    _backup(repo_dir, BASE - timedelta(days=3), "logical", 5000)
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        first = collect(settings.model_copy(update={"capacity": cfg}), ops, now=BASE - timedelta(days=1))
        assert first.complete and not first.warnings, first.to_json()   # a bigint created_at is not a time,
        assert first.backfilled > 0 and "rows:public.epochs" in {s.series for s in first.samples}  # not a failure
        got = collect(odd, ops, now=BASE)
        skipped = dict(got.skipped)
        assert set(skipped) == {"repository", f"disk {tmp_path / 'no-such-mount'}"}, got.skipped
        assert "does not exist" in skipped["repository"] and not gone.exists()
        assert not got.complete and "\n" not in got.incomplete_line()
        names = {s.series for s in got.samples}
        assert f"disk.used:{tmp_path}" in names and "repo.bytes" not in names
        assert "rows:public.tickets" in names and not got.warnings
        stored = {r[0] for r in ops.execute("SELECT series FROM ops.capacity_samples WHERE day = %s", (BASE.date(),))}
        assert "repo.bytes" not in stored and f"disk.used:{tmp_path}" in stored

        s3 = settings.model_copy(update={"repository": "s3://no-bucket-here/x", "s3_endpoint_url": "http://127.0.0.1:1"})
        got = collect(s3, ops, now=BASE + timedelta(days=1))
        assert [m for m, _ in got.skipped] == ["repository"], got.skipped
        assert "db.bytes" in {s.series for s in got.samples}
        assert ops.execute("SELECT count(*) FROM ops.capacity_samples WHERE day = %s AND series = 'db.bytes'",
                           (BASE.date() + timedelta(days=1),)).fetchone()[0] == 1

        # An empty directory where yesterday's repository was (a mount point without its volume).
        gone.mkdir()
        got = collect(odd.model_copy(update={"disk_paths": [tmp_path]}), ops, now=BASE + timedelta(days=2))
        assert [m for m, _ in got.skipped] == ["repository"] and "mounted" in got.skipped[0][1], got.skipped

        bare = collect(settings.model_copy(update={"repository": None, "disk_paths": []}), ops,
                       now=BASE + timedelta(days=3))
        assert bare.complete and bare.not_configured == ["repository", "disks"], bare.to_json()


def test_a_backfill_that_fails_leaves_the_collection_complete_and_the_other_tables_backfilled(setup, monkeypatch):
    from bvh_ops.capacity import collect as mod

    platform, ops_dsn, settings, _ = setup
    real = mod._backfill_table

    def failing(ops, db, name, *args):
        if name == "public.users":
            raise psycopg.errors.UndefinedFunction("operator does not exist\nLINE 1: SELECT ...\nHINT: No op")
        return real(ops, db, name, *args)

    monkeypatch.setattr(mod, "_backfill_table", failing)
    cfg = settings.capacity.model_copy(update={"main_tables": ["public.users", "public.tickets"]})
    with psycopg.connect(ops_dsn, autocommit=True) as ops:
        got = collect(settings.model_copy(update={"capacity": cfg}), ops, now=BASE)
    assert got.complete, got.skipped
    assert [w[0] for w in got.warnings] == ["backfill rows:public.users"]
    assert got.warnings[0][1] == "UndefinedFunction: operator does not exist"      # one line
    assert got.backfilled > 0 and "rows:public.tickets" in {s.series for s in got.samples}
