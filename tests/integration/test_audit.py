"""The audit trail on a real PostgreSQL: entries appended, digests signed into the ops database
and the repository, then tampered with in SQL (UPDATE, DELETE, INSERT, reordering, deleting
the tail) — `bvh-ops audit verify`, run as the real CLI, names the first bad entry each time;
a month's export verifies standalone and stops verifying once edited."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bvh_ops.audit.chain import content_hash, link
from bvh_ops.audit.digest import checkpoint, verify_trail
from bvh_ops.audit.record import record
from bvh_ops.audit.store import append, append_many
from bvh_ops.opsdb.migrations import migrate
from tests.integration.cli import run_cli

T0 = datetime(2026, 10, 20, tzinfo=UTC)


def rows(n: int, start: datetime = T0, step: timedelta = timedelta(days=1)):
    for i in range(n):
        yield (start + i * step, "platform", ["gdpr.access", "wallet.adjust", "consent.change", "aml.finding"][i % 4],
               f"user-{i % 5}", {"i": i, "amount": 10.5 * i, "note": "ünïcode"})


@pytest.fixture
def trail(fresh_db, repo_dir, tmp_path, make_settings):
    """An ops database with 40 entries (2026-10-20 .. 2026-11-28) and digests at 20 and 40;
    returns (settings, dsn, CLI env)."""
    dsn = fresh_db("_ops")
    settings = make_settings(dsn, f"file://{repo_dir}", ops_database_url=dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        append_many(conn, rows(20))
        checkpoint(settings, conn, T0 + timedelta(days=20))
        append_many(conn, rows(20, start=T0 + timedelta(days=20)))
        checkpoint(settings, conn, T0 + timedelta(days=40))
    env = {"BVH_OPS_OPS_DATABASE_URL": dsn, "BVH_OPS_REPOSITORY": f"file://{repo_dir}",
           "BVH_OPS_STATE_DIR": str(settings.state_dir)}
    return settings, dsn, env


def tamper(dsn: str, *statements: str) -> None:
    """What someone with the database's rights does: switch the append-only trigger off, edit."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE ops.audit_chain DISABLE TRIGGER USER")
        for sql in statements:
            sql(conn) if callable(sql) else conn.execute(sql)
        conn.execute("ALTER TABLE ops.audit_chain ENABLE TRIGGER USER")


def test_an_intact_trail_verifies_and_appends_are_refused_edits(trail):
    settings, dsn, env = trail
    proc = run_cli("audit", "verify", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "audit trail intact: 40 entries" in proc.stdout
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("UPDATE ops.audit_chain SET actor = 'x' WHERE seq = 3")


def insert_forged_13(conn: psycopg.Connection) -> None:
    """An entry made to look right: seq 13 linked to entry 12's hash, its own hash computed."""
    prev = conn.execute("SELECT hash FROM ops.audit_chain WHERE seq = 12").fetchone()[0]
    at, data = T0 + timedelta(days=12, hours=1), {"amount": 5000}
    h = link(prev, content_hash(13, at, "platform", "wallet.adjust", "user-ghost", data))
    conn.execute("INSERT INTO ops.audit_chain (seq, at, actor, action, subject, data, prev_hash, hash) "
                 "VALUES (13, %s, 'platform', 'wallet.adjust', 'user-ghost', %s, %s, %s)", (at, Jsonb(data), prev, h))


@pytest.mark.parametrize(("statements", "first_bad", "problem"), [
    (["UPDATE ops.audit_chain SET data = jsonb_set(data, '{amount}', '99999') WHERE seq = 12"], 12, "modified"),
    (["DELETE FROM ops.audit_chain WHERE seq = 12"], 12, "missing"),
    (["UPDATE ops.audit_chain SET seq = seq + 1000 WHERE seq >= 13",
      "UPDATE ops.audit_chain SET seq = seq - 999 WHERE seq >= 1000", insert_forged_13], 13, "inserted"),
    (["UPDATE ops.audit_chain SET seq = -12 WHERE seq = 12", "UPDATE ops.audit_chain SET seq = 12 WHERE seq = 13",
      "UPDATE ops.audit_chain SET seq = 13 WHERE seq = -12"], 12, "reordered"),
    (["DELETE FROM ops.audit_chain WHERE seq > 33", "DELETE FROM ops.audit_digests WHERE seq > 33"], 34,
     "truncated"),
], ids=["update", "delete", "insert", "reorder", "truncate-tail"])
def test_verify_names_the_first_bad_entry_of_each_tamper(trail, statements, first_bad, problem):
    settings, dsn, env = trail
    tamper(dsn, *statements)
    proc = run_cli("audit", "verify", env=env)
    assert proc.returncode == 8, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert f"first bad entry seq {first_bad}" in lines[0], proc.stdout
    assert lines[1].strip().startswith(f"seq {first_bad}: {problem}"), proc.stdout
    doc = json.loads(run_cli("audit", "verify", "--json", env=env).stdout)
    assert doc["ok"] is False and doc["first_bad_seq"] == first_bad


def test_a_digest_deleted_from_the_ops_database_is_reported_from_the_repository(trail):
    settings, dsn, env = trail
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM ops.audit_digests WHERE seq = 40")
    proc = run_cli("audit", "verify", env=env)
    assert proc.returncode == 8
    assert "seq 40: digest_missing: digest at seq 40 is in the repository but not in the ops database" in proc.stdout


def test_a_forged_digest_in_the_ops_database_is_found(trail):
    settings, dsn, env = trail
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE ops.audit_digests SET head_hash = repeat('a', 64) WHERE seq = 20")
        report = verify_trail(settings, conn)
    problems = [(f.problem, f.seq) for f in report.findings]
    assert ("digest_differs", 20) in problems


def test_checkpoint_refuses_to_sign_a_broken_chain(trail):
    settings, dsn, env = trail
    with psycopg.connect(dsn, autocommit=True) as conn:
        append(conn, "ops", "backup.committed", "b1", {"bytes": 1}, datetime.now(UTC))
    tamper(dsn, "UPDATE ops.audit_chain SET subject = 'b2' WHERE seq = 41")
    proc = run_cli("audit", "checkpoint", env=env)
    assert proc.returncode == 8 and "seq 41: modified" in proc.stderr, proc.stderr


def test_export_of_a_month_verifies_standalone_and_not_once_edited(trail, tmp_path):
    settings, dsn, env = trail
    out = tmp_path / "2026-11.jsonl"
    proc = run_cli("audit", "export", "--period", "2026-11", "--format", "jsonl", "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    entries = [d for d in docs if d["type"] == "entry"]
    assert len(entries) == 28 and all(d["at"].startswith("2026-11") for d in entries)
    assert docs[-1]["type"] == "proof" and docs[-1]["digest"]["digest"]["seq"] == 40
    check = run_cli("audit", "verify-export", str(out), env={})  # no configuration at all: standalone
    assert check.returncode == 0, check.stdout + check.stderr
    assert "export intact: 28 entries of 2026-11" in check.stdout

    edited = tmp_path / "edited.jsonl"
    edited.write_text(out.read_text().replace('"amount": 105.0', '"amount": 5.0', 1))
    bad = run_cli("audit", "verify-export", str(edited), env={})
    assert bad.returncode == 8 and "does not hash to the chain" in bad.stdout, bad.stdout
    dropped = tmp_path / "dropped.jsonl"
    lines = out.read_text().splitlines(keepends=True)
    dropped.write_text("".join(lines[:5] + lines[6:]))
    assert run_cli("audit", "verify-export", str(dropped), env={}).returncode == 8


def test_filtered_csv_export_verifies_with_its_proof(trail, tmp_path):
    settings, dsn, env = trail
    out = tmp_path / "gdpr.csv"
    proc = run_cli("audit", "export", "--period", "2026-11", "--format", "csv", "--action", "gdpr.", "--out",
                   str(out), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["entries"] == 7 and summary["omitted"] > 0
    assert out.read_text().count("gdpr.access") == 7
    check = run_cli("audit", "verify-export", str(out), "--json", env={})
    assert json.loads(check.stdout)["ok"] is True, check.stdout



def test_the_same_month_exports_twice_in_a_row(trail, tmp_path):
    """An export records its own audit.export entry; the next export of this month (another
    format) failed 'no signed digest covers seq N yet' — the export now signs after itself."""
    settings, dsn, env = trail
    period = datetime.now(UTC).strftime("%Y-%m")
    for name, fmt in (("a.jsonl", "jsonl"), ("b.csv", "csv"), ("c.jsonl", "jsonl")):
        proc = run_cli("audit", "export", "--period", period, "--format", fmt, "--out", str(tmp_path / name), env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert run_cli("audit", "verify-export", str(tmp_path / name), env={}).returncode == 0
    assert run_cli("audit", "verify", env=env).returncode == 0

def test_a_failed_export_leaves_no_file_that_looks_like_one(trail, tmp_path):
    """Entries after the last signed digest: the export fails (no proof can cover them) — and
    left an empty FILE behind, which looked like an export of nothing."""
    settings, dsn, env = trail
    with psycopg.connect(dsn, autocommit=True) as conn:
        append_many(conn, rows(2, start=T0 + timedelta(days=40)))  # not checkpointed
    for fmt, out in (("jsonl", tmp_path / "x.jsonl"), ("csv", tmp_path / "x.csv")):
        proc = run_cli("audit", "export", "--period", "2026-11", "--format", fmt, "--out", str(out), env=env)
        assert proc.returncode == 8 and "no signed digest covers" in proc.stderr, proc.stderr
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("x.", ".x."))) == []


def test_verify_from_past_the_head_checks_nothing_and_says_so(trail):
    settings, dsn, env = trail
    proc = run_cli("audit", "verify", "--from", "999999", env=env)
    assert proc.returncode == 2 and "the audit trail ends at seq 40" in proc.stderr, proc.stdout + proc.stderr
    assert run_cli("audit", "verify", "--from", "40", env=env).returncode == 0


def test_alerts_silence_and_own_actions_land_in_the_trail(trail):
    settings, dsn, env = trail
    proc = run_cli("alerts", "silence", "service=api", "--for", "1h", "--comment", "maintenance", env=env)
    assert proc.returncode == 0, proc.stderr
    assert record(settings, None, "drill.result", "drill-1", {"passed": True})
    shown = json.loads(run_cli("audit", "show", "--action", "alert", "--json", env=env).stdout)
    assert [e["action"] for e in shown] == ["alert.silence"] and shown[0]["data"]["comment"] == "maintenance"
    assert run_cli("audit", "verify", env=env).returncode == 0


def test_record_never_raises_unless_strict(make_settings, repo_dir, tmp_path, caplog):
    settings = make_settings("postgresql://x@127.0.0.1:1/none", f"file://{repo_dir}",
                             ops_database_url="postgresql://x@127.0.0.1:1/none")
    assert record(settings, None, "backup.committed", "b1", {"bytes": 1}) is False
    assert "AUDIT TRAIL NOT WRITTEN" in caplog.text
    with pytest.raises(Exception, match="ops database|refused|connect"):
        record(settings, None, "backup.committed", "b1", {}, strict=True)


def test_digests_go_to_an_s3_repository(fresh_db, make_settings, s3_bucket, s3_server):
    import boto3

    dsn = fresh_db("_ops")
    settings = make_settings(dsn, f"s3://{s3_bucket}/repo", ops_database_url=dsn, s3_endpoint_url=s3_server)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        append_many(conn, rows(5))
        digest, new = checkpoint(settings, conn, datetime.now(UTC))
        assert new and digest.seq == 5
        assert checkpoint(settings, conn, datetime.now(UTC)) == (digest, False)
        keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(
            Bucket=s3_bucket, Prefix="repo/audit/")["Contents"]]
        assert keys == ["repo/audit/digests/000000000005.json"]
        conn.execute("DELETE FROM ops.audit_digests")
        report = verify_trail(settings, conn)
    assert [(f.problem, f.seq) for f in report.findings] == [("digest_missing", 5)]


def test_a_digest_signed_into_another_repository_is_checked_there_not_called_tampered(trail, tmp_path):
    """A one-off backup with BVH_OPS_REPOSITORY pointing elsewhere signs its digest there: the
    trail's own repository lacked it and `audit verify` said TAMPERED for good. The ops database
    now records where each copy went and verify reads it there; once that copy is gone, it says
    which repository it was signed into."""
    import shutil

    settings, dsn, env = trail
    other = tmp_path / "other-repo"
    other.mkdir()
    elsewhere = settings.model_copy(update={"repository": f"file://{other}"})
    with psycopg.connect(dsn, autocommit=True) as conn:
        append_many(conn, rows(5, start=T0 + timedelta(days=40)))
        digest, new = checkpoint(elsewhere, conn, T0 + timedelta(days=45))
        assert new and digest.seq == 45
        assert verify_trail(settings, conn).ok  # read in the other repository
        assert verify_trail(elsewhere, conn).ok  # and the other way round
    proc = run_cli("audit", "verify", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.rmtree(other / "audit")
    with psycopg.connect(dsn, autocommit=True) as conn:
        report = verify_trail(settings, conn)
    assert [(f.problem, f.seq) for f in report.findings] == [("digest_missing", 45)]
    assert f"file://{other}" in report.findings[0].detail
