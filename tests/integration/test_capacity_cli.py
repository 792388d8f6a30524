"""`bvh-ops capacity collect` and `bvh-ops report capacity` as an operator runs them (a child
process, a config file): against a real embedded PostgreSQL with the sample platform, an ops
database and a file:// repository holding a backup, the collection (with backfill) lands in the
ops database; the report's JSON has the issue's shape; the charts are written; a resource over its
limit is critical and makes the report exit 1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bvh_ops.capacity.charts import PNG_SIGNATURE
from bvh_ops.demo.sample import load_sample
from tests.integration.cli import run_cli

RESOURCE_KEYS = {"name", "unit", "current", "limit", "growth_per_month", "days_until", "status", "reason", "model",
                 "backtest_mape"}


@pytest.fixture
def cli_env(fresh_db, repo_dir, keypair, tmp_path):
    platform = fresh_db("_platform")
    load_sample(platform, scale=0.05)
    ops = fresh_db("_ops")
    pub, key = keypair
    at = datetime.now(UTC) - timedelta(days=5)
    backup = repo_dir / "backups" / f"{at:%Y%m%dT%H%M%SZ}-logical-abcdef"   # a backup of 5 days ago
    backup.mkdir(parents=True)
    (backup / "data.zst").write_bytes(b"x" * 200_000)
    (backup / "manifest.json").write_bytes(b"{}")

    def config(**capacity) -> dict[str, str]:
        cfg = tmp_path / "bvh-ops.toml"
        cfg.write_text(f'database_url = "{platform}"\nops_database_url = "{ops}"\n'
                       f'repository = "file://{repo_dir}"\nrecipients = ["{pub}"]\nidentity = "{key}"\n'
                       f'state_dir = "{tmp_path / "state"}"\ndisk_paths = ["{tmp_path}"]\n\n[capacity]\n'
                       + "".join(f"{k} = {v}\n" for k, v in capacity.items()))
        return {"BVH_OPS_CONFIG": str(cfg)}

    return config, ops


def test_collect_then_report_as_json_and_charts(cli_env, tmp_path):
    config, ops = cli_env
    env = config(backfill_days=20)
    proc = run_cli("capacity", "collect", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    series = {s["series"]: s for s in got["samples"]}
    assert {"db.bytes", "repo.bytes", "rows:public.tickets"} <= set(series)
    assert series["repo.bytes:dumps"]["value"] >= 200_000 and series["db.bytes"]["unit"] == "bytes"
    assert got["backfilled"] > 0 and got["day"] == datetime.now(UTC).date().isoformat()
    with psycopg.connect(ops) as conn:
        days = conn.execute("SELECT count(DISTINCT day) FROM ops.capacity_samples WHERE series = 'repo.bytes'"
                            ).fetchone()[0]
    assert days >= 5           # the backup's day onward, backfilled from the repository listing

    text = run_cli("capacity", "collect", env=env)     # a second run the same day replaces the samples
    assert text.returncode == 0, text.stderr
    assert "series for" in text.stdout and "db.bytes" in text.stdout

    charts = tmp_path / "charts"
    proc = run_cli("report", "capacity", "--json", "--charts", str(charts), env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["generated_at"] and doc["resources"]
    by = {r["name"]: r for r in doc["resources"]}
    assert {"db.bytes", "repo.bytes", "disk.used:" + str(tmp_path)} <= set(by)
    for r in doc["resources"]:
        assert RESOURCE_KEYS <= set(r)
        assert r["status"] in ("ok", "warning", "critical", "unpredictable") and r["reason"]
        assert r["days_until"] is None or set(r["days_until"]) == {"low", "expected", "high"}
    assert by["db.bytes"]["status"] == "unpredictable" and "too little history" in by["db.bytes"]["reason"]
    assert by["disk.used:" + str(tmp_path)]["limit"] > 0
    pngs = sorted(charts.glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(PNG_SIGNATURE) for p in pngs)

    table = run_cli("report", "capacity", env=env)
    assert table.returncode == 0, table.stderr
    assert "| resource | current | limit |" in table.stdout and "db.bytes" in table.stdout


def test_a_resource_over_its_limit_is_critical_and_exits_1(cli_env):
    config, _ = cli_env
    env = config(repository_quota_bytes=1000)         # the repository already holds 200 kB
    assert run_cli("capacity", "collect", env=env).returncode == 0
    proc = run_cli("report", "capacity", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    repo = next(r for r in json.loads(proc.stdout)["resources"] if r["name"] == "repo.bytes")
    assert repo["status"] == "critical" and repo["limit"] == 1000


def test_a_measure_that_could_not_run_fails_the_collection_and_keeps_the_rest(cli_env, tmp_path):
    """The platform database down: the repository and disks are still measured and stored, but the
    command names what is missing on one stderr line and exits 1 — never a clean exit."""
    config, ops = cli_env
    env = config(backfill_days=5)
    cfg = tmp_path / "bvh-ops.toml"
    text = cfg.read_text()
    cfg.write_text("\n".join('database_url = "postgresql://nobody:s3cret-pw@127.0.0.1:1/platform"'
                             if line.startswith("database_url") else line for line in text.splitlines()) + "\n")
    proc = run_cli("capacity", "collect", "--json", env=env)
    assert proc.returncode == 1, proc.stdout
    doc = json.loads(proc.stdout)
    assert doc["complete"] is False and [s["measure"] for s in doc["skipped"]] == ["database"]
    assert "repo.bytes" in {s["series"] for s in doc["samples"]}
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "database" in lines[0]
    assert "run `bvh-ops capacity collect` again" in lines[0] and "s3cret-pw" not in proc.stderr + proc.stdout
    with psycopg.connect(ops) as conn:        # what could be measured is stored
        assert conn.execute("SELECT count(*) FROM ops.capacity_samples WHERE series = 'repo.bytes' AND "
                            "source = 'measured'").fetchone()[0] == 1
    text_run = run_cli("capacity", "collect", env=env)
    assert text_run.returncode == 1 and "incomplete" in text_run.stderr and "series for" in text_run.stdout
