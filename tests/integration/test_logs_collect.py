"""Log collection (#13 item 1) on real components: the embedded PostgreSQL as the ops database,
real files written by the sample platform's JsonLog, rotation by rename, truncation, partial
lines, malformed lines, unreadable files, the ops database down, pseudonymisation."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from bvh_ops.config import Settings
from bvh_ops.demo.platform.logs import JsonLog
from bvh_ops.errors import DatabaseUnavailable
from bvh_ops.logs.collect import collect, pipelines
from bvh_ops.logs.pseudonym import KEY_FILE, PREFIX
from bvh_ops.logs.store import Query, iter_records
from bvh_ops.opsdb.migrations import migrate
from bvh_ops.pg.cluster import free_port
from tests.integration.cli import assert_one_line_error, run_cli


@pytest.fixture
def ops(fresh_db) -> str:
    dsn = fresh_db()
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    return dsn


def settings_for(tmp_path: Path, dsn: str, *sources: dict, **extra) -> Settings:
    return Settings(ops_database_url=dsn, state_dir=tmp_path / "state", log_sources=list(sources), **extra)


def run_collect(settings: Settings, dsn: str, batch: int = 5000):
    with psycopg.connect(dsn) as conn:
        return collect(conn, pipelines(settings), now=datetime.now(UTC), batch=batch)


def stored(dsn: str, **query) -> list:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return list(iter_records(conn, Query(**query)))


def offsets(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT source, file_id, path, file_offset FROM ops.log_offsets ORDER BY 1, 2").fetchall()


def app_source(path: Path) -> dict:
    return {"name": "app", "path": f"{path}*", "format": "json"}


def write_n(log: JsonLog, start: int, n: int, category: str = "application") -> None:
    for i in range(start, start + n):
        log.write(category, "lottery.ticket_bought", seq=i, account=f"acc-{i % 7}")


def seqs(records) -> list[int]:
    return sorted(r.fields["seq"] for r in records)


def test_rotation_between_two_collects_loses_and_repeats_nothing(ops, tmp_path):
    path = tmp_path / "logs" / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 50)
    settings = settings_for(tmp_path, ops, app_source(path))
    first = run_collect(settings, ops)
    assert first.records == 50
    # More lines to the old file after the collect, then rotation by rename and a new file.
    write_n(log, 50, 30)
    log.close()
    path.rename(path.with_name("app.log.1"))
    log = JsonLog(path)
    write_n(log, 80, 20)
    log.close()
    second = run_collect(settings, ops)
    assert second.records == 50
    assert second.sources[0].files == 2
    assert seqs(stored(ops)) == list(range(100))
    # A third run with nothing new reads nothing.
    assert run_collect(settings, ops).records == 0
    # The rotated file deleted: its offset row goes too.
    path.with_name("app.log.1").unlink()
    run_collect(settings, ops)
    assert [row[2] for row in offsets(ops)] == [str(path)]


def test_a_partial_last_line_waits_for_its_newline(ops, tmp_path):
    path = tmp_path / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 3)
    log.close()
    line = json.dumps({"timestamp": "2026-11-28T10:00:00.000Z", "level": "info", "category": "application",
                       "event": "late", "seq": 3})
    with open(path, "a") as fh:
        fh.write(line[:25])
    settings = settings_for(tmp_path, ops, app_source(path))
    assert run_collect(settings, ops).records == 3
    assert stored(ops, match={"event": "late"}) == []
    with open(path, "a") as fh:
        fh.write(line[25:] + "\n")
    result = run_collect(settings, ops)
    assert (result.records, result.quarantined) == (1, 0)
    assert seqs(stored(ops)) == [0, 1, 2, 3]


def test_a_truncated_file_restarts_from_zero_and_says_so(ops, tmp_path):
    path = tmp_path / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 20)
    log.close()
    settings = settings_for(tmp_path, ops, app_source(path))
    run_collect(settings, ops)
    os.truncate(path, 0)   # copytruncate-style: same inode, emptied, then new lines
    log = JsonLog(path)
    write_n(log, 100, 2)
    log.close()
    result = run_collect(settings, ops)
    assert result.records == 2
    assert any("truncated" in m for m in result.sources[0].messages)
    assert seqs(stored(ops)) == [*range(20), 100, 101]


def test_a_file_replaced_under_its_inode_restarts_from_zero(ops, tmp_path):
    path = tmp_path / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 5)
    log.close()
    settings = settings_for(tmp_path, ops, app_source(path))
    run_collect(settings, ops)
    text = path.read_text()
    # Same inode, different first bytes, longer than before (size alone cannot tell).
    with open(path, "r+") as fh:
        fh.write(text.replace('"seq":0', '"seq":9').replace('"seq":1,', '"seq":8,') + text)
    result = run_collect(settings, ops)
    assert any("replaced" in m for m in result.sources[0].messages)
    assert result.records == 10


def test_malformed_lines_are_quarantined_counted_and_do_not_stop_the_run(ops, tmp_path):
    path = tmp_path / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 2)
    log.close()
    with open(path, "ab") as fh:
        fh.write(b"this is not json\n")
        fh.write(b'{"level": "info", "category": "application", "event": "no.time"}\n')
        fh.write(b'{"timestamp": "2026-11-28T10:00:00Z", "category": "metrics", "event": "x"}\n')
        fh.write(b'["a", "list"]\n')
        fh.write(b'\xff\xfe not utf-8\n')
        fh.write(b"\n")
    log = JsonLog(path)
    write_n(log, 2, 2)
    log.close()
    result = run_collect(settings_for(tmp_path, ops, app_source(path)), ops)
    assert (result.records, result.quarantined) == (4, 5)
    assert seqs(stored(ops)) == [0, 1, 2, 3]
    with psycopg.connect(ops) as conn:
        rows = conn.execute("SELECT line, error FROM ops.log_quarantine ORDER BY file_offset").fetchall()
    errors = [e for _, e in rows]
    assert rows[0][0] == "this is not json" and errors[0].startswith("not JSON")
    assert "timestamp is missing" in errors[1]
    assert "unknown category 'metrics'" in errors[2]
    assert "not a JSON object" in errors[3]
    assert errors[4] == "not UTF-8"


def test_an_unreadable_file_is_reported_and_the_others_are_collected(ops, tmp_path):
    logs = tmp_path / "logs"
    log = JsonLog(logs / "app.log")
    write_n(log, 0, 3)
    log.close()
    (logs / "app.log.dangling").symlink_to(logs / "gone")      # vanished between rotation and read
    (logs / "app.log.d").mkdir()                               # not a file at all
    noread = logs / "app.log.2"
    noread.write_text("")
    noread.chmod(0)
    result = run_collect(settings_for(tmp_path, ops, {"name": "app", "path": f"{logs}/app.log*", "format": "json"}),
                         ops)
    src = result.sources[0]
    assert result.records == 3
    expected = 2 if os.geteuid() == 0 else 3   # root reads a mode-000 file anyway
    assert src.errors == expected, src.messages
    assert all(m.count("\n") == 0 and "unreadable" in m for m in src.messages)


def test_ops_database_down_commits_nothing_and_the_next_run_collects_all(ops, tmp_path):
    path = tmp_path / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 10)
    log.close()
    env = {"BVH_OPS_STATE_DIR": str(tmp_path / "state"),
           "BVH_OPS_LOG_SOURCES": json.dumps([app_source(path)])}
    down = run_cli("logs", "collect", "--json",
                   env={**env, "BVH_OPS_OPS_DATABASE_URL": f"postgresql://x:y@127.0.0.1:{free_port()}/ops"})
    assert_one_line_error(down, "unreachable")
    assert offsets(ops) == [] and stored(ops) == []
    ok = run_cli("logs", "collect", "--json", env={**env, "BVH_OPS_OPS_DATABASE_URL": ops})
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["records"] == 10 and doc["quarantined"] == 0
    src = doc["sources"][0]
    assert {k: src[k] for k in ("name", "files", "records", "quarantined", "errors")} == {
        "name": "app", "files": 1, "records": 10, "quarantined": 0, "errors": 0}
    assert doc["sources"][0]["bytes"] == path.stat().st_size
    assert seqs(stored(ops)) == list(range(10))


def test_ops_database_lost_mid_collect_keeps_no_half_file(ops, pg, tmp_path):
    """The connection dies after the first COPY batch: that file's records and offset are not
    committed; the next run stores each line exactly once."""
    path = tmp_path / "app.log"
    log = JsonLog(path)
    write_n(log, 0, 300)
    log.close()
    settings = settings_for(tmp_path, ops, app_source(path))
    import bvh_ops.logs.store as store_mod

    real = store_mod.copy_records
    calls = []

    def dying(conn, records, known):
        n = real(conn, records, known)
        calls.append(n)
        if len(calls) == 2:
            with psycopg.connect(pg.dsn(), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return n

    store_mod.copy_records = dying
    try:
        with pytest.raises(DatabaseUnavailable, match="nothing uncommitted was kept"):
            run_collect(settings, ops, batch=100)
    finally:
        store_mod.copy_records = real
    assert offsets(ops) == [] and stored(ops) == []
    assert run_collect(settings, ops, batch=100).records == 300
    assert seqs(stored(ops)) == list(range(300))


def test_pseudonymised_categories_never_store_the_clear_value_and_pseudonyms_are_stable(ops, tmp_path):
    path = tmp_path / "app.log"
    log = JsonLog(path)
    log.write("application", "account.registered", email="dana@example.org", ip="198.51.100.7", phone="+972501234567",
              account="acc-1")
    log.write("application", "wallet.deposit", email="dana@example.org", amount=50)
    log.write("security", "auth.login_failed", level="warning", email="dana@example.org", ip="198.51.100.7")
    log.close()
    settings = settings_for(tmp_path, ops, app_source(path))
    run_collect(settings, ops)
    key = tmp_path / "state" / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with psycopg.connect(ops) as conn:
        app_rows = conn.execute("SELECT fields::text FROM ops.log_application").fetchall()
    assert app_rows and not any("dana@example.org" in r[0] or "198.51.100.7" in r[0] or "+972501234567" in r[0]
                                for r in app_rows)
    app = stored(ops, category="application")
    assert app[0].fields["email"].startswith(PREFIX)
    assert app[0].fields["email"] == app[1].fields["email"]             # stable: joinable
    assert app[0].fields["account"] == "acc-1"                         # not a named field
    sec = stored(ops, category="security")
    assert sec[0].fields["email"] == "dana@example.org" and sec[0].fields["ip"] == "198.51.100.7"
    # The same key next run (and in another collector): the same pseudonym.
    log = JsonLog(path)
    log.write("application", "wallet.deposit", email="dana@example.org", amount=10)
    log.close()
    run_collect(settings, ops)
    app = stored(ops, category="application")
    assert len({r.fields["email"] for r in app}) == 1
    assert key.read_text().strip() not in json.dumps([r.fields for r in app])


def test_records_without_a_category_are_classified_by_config_rules(ops, tmp_path):
    path = tmp_path / "app.log"
    with open(path, "w") as fh:
        for event, level in (("auth.login_failed", "warning"), ("cache.miss", "debug"), ("report.built", "info"),
                             ("wallet.admin_adjust", "info")):
            fh.write(json.dumps({"timestamp": "2026-11-28T10:00:00Z", "level": level, "event": event}) + "\n")
    settings = settings_for(tmp_path, ops, app_source(path),
                            log_rules=[{"event": "wallet.admin_*", "category": "audit"}])
    run_collect(settings, ops)
    got = {r.event: r.category for r in stored(ops)}
    assert got == {"auth.login_failed": "security", "cache.miss": "debug", "report.built": "application",
                   "wallet.admin_adjust": "audit"}


def test_platform_audit_records_join_the_audit_chain_once(ops, tmp_path):
    """Audit-category records are appended to the tamper-evident chain in the transaction that
    stores them: across rotation and repeated runs each is chained exactly once, and the chain
    verifies."""
    from bvh_ops.audit.chain import verify
    from bvh_ops.audit.store import entries

    path = tmp_path / "logs" / "app.log"
    log = JsonLog(path)
    for i in range(6):
        log.write("audit", "wallet.deposit", userId=i, amount=20.0 + i, transactionId=100 + i)
    write_n(log, 0, 4)                                      # application: not chained
    settings = settings_for(tmp_path, ops, app_source(path))
    run_collect(settings, ops)
    log.write("audit", "ticket.purchase", userId=9, ticketId=77)
    log.close()
    run_collect(settings, ops)
    run_collect(settings, ops)                              # nothing new: nothing chained twice
    with psycopg.connect(ops) as conn:
        chained = list(entries(conn))
        report = verify(iter(chained), [], {})
    assert [(e.action, e.actor, e.subject) for e in chained] == [
        *[("wallet.deposit", f"user:{i}", f"transactionId:{100 + i}") for i in range(6)],
        ("ticket.purchase", "user:9", "ticketId:77")]
    assert report.ok, report
