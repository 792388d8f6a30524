"""restore --table of a partitioned table: it comes back whole — every partition (and theirs)
with its rows, attached to its parent, the parent's primary key and indexes over them, the serial
going on — and compared against the backup's fingerprint of the table as a whole. A partition
asked for alone comes back as a table of its own (a partitioned one with its own partitions
attached) and is compared with the fingerprint the backup recorded for it (`extra.partitions`);
a backup taken before those were recorded refuses it, naming its partitioned table: it proves
only the whole, and a restore whose comparison cannot run must not report one."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.errors import ConfigError
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import compare_tables, restore_logical
from tests.integration.test_encodings import _relations
from tests.integration.test_selective_names import _backup_of, _source

SOURCE = [
    "CREATE TABLE tickets (id bigserial, draw_id int NOT NULL, sold_at date NOT NULL, amount numeric(12,2) NOT NULL, "
    "PRIMARY KEY (id, draw_id, sold_at)) PARTITION BY RANGE (sold_at)",
    "CREATE INDEX tickets_draw ON tickets (draw_id)",
    "CREATE TABLE tickets_2026h1 PARTITION OF tickets FOR VALUES FROM ('2026-01-01') TO ('2026-07-01')",
    "CREATE TABLE tickets_2026h2 PARTITION OF tickets FOR VALUES FROM ('2026-07-01') TO ('2027-01-01') "
    "PARTITION BY LIST (draw_id)",
    "CREATE TABLE tickets_2026h2_odd PARTITION OF tickets_2026h2 FOR VALUES IN (1, 3, 5)",
    "CREATE TABLE tickets_2026h2_rest PARTITION OF tickets_2026h2 DEFAULT",
    "INSERT INTO tickets (draw_id, sold_at, amount) "
    "SELECT g % 7, '2026-01-01'::date + (g % 360), g FROM generate_series(1, 1000) g",
    "CREATE TABLE draws (id int PRIMARY KEY)",
    "INSERT INTO draws SELECT g FROM generate_series(0, 6) g",
    "ALTER TABLE tickets ADD FOREIGN KEY (draw_id) REFERENCES draws (id)",
    "CREATE TABLE wallets (id int PRIMARY KEY, balance numeric)",
    "INSERT INTO wallets VALUES (1, 10)",
]
LEAVES = ["tickets_2026h1", "tickets_2026h2_odd", "tickets_2026h2_rest"]
PARTITIONS = {"tickets_2026h1": "tickets", "tickets_2026h2": "tickets", "tickets_2026h2_odd": "tickets_2026h2",
              "tickets_2026h2_rest": "tickets_2026h2"}


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM ONLY {t}").fetchone()[0] for t in LEAVES}


def _attached(dsn: str, relkinds: str) -> dict[str, str]:
    """child -> parent of every inheritance link between relations of these kinds."""
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "SELECT c.relname, p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE c.relkind = ANY(%s)", (list(relkinds),)).fetchall())


@pytest.fixture
def backed_up(pg, fresh_db, make_settings, repo_dir):
    src = _source(fresh_db, SOURCE)
    settings = make_settings(src, f"file://{repo_dir}")
    return src, settings, run_logical_backup(settings).manifest


def test_a_partitioned_table_comes_back_whole_attached_and_compared(backed_up, fresh_db):
    src, settings, manifest = backed_up
    target = fresh_db("_into")
    result = restore_logical(settings, manifest.backup_id, target, tables=["public.tickets"])
    assert [c.name for c in result.comparisons] == ["public.tickets"] and result.ok
    assert _counts(target) == _counts(src) and sum(_counts(target).values()) == 1000
    assert _attached(target, "rp") == PARTITIONS  # each partition attached, sub-partitions to theirs
    # the partitions' primary keys and indexes attached to the parent's: one index over the whole
    indexes = _attached(target, "iI")
    assert indexes["tickets_2026h1_pkey"] == "tickets_pkey" and indexes["tickets_2026h2_odd_pkey"] == "tickets_2026h2_pkey"
    assert indexes["tickets_2026h1_draw_id_idx"] == "tickets_draw"
    assert "public.wallets" not in _relations(target)  # only what was asked
    with psycopg.connect(target, autocommit=True) as conn:  # the serial goes on after the restored ids
        new_id = conn.execute("INSERT INTO tickets (draw_id, sold_at, amount) VALUES (3, '2026-09-01', 1) "
                              "RETURNING id").fetchone()[0]
        assert new_id > 1000
        with pytest.raises(psycopg.errors.UniqueViolation):  # the parent's key holds across partitions
            conn.execute("INSERT INTO tickets (id, draw_id, sold_at, amount) VALUES (1, 1, '2026-01-02', 0)")


def test_the_foreign_key_between_two_restored_tables_comes_back_and_holds(backed_up, fresh_db):
    """Both ends of tickets' foreign key to draws restored: the key is restored too (it was always
    left out), over every partition; with only one end, the tables come back without it."""
    _, settings, manifest = backed_up
    target = fresh_db("_into")
    result = restore_logical(settings, manifest.backup_id, target, tables=["tickets", "draws"])
    assert result.ok and sorted(c.name for c in result.comparisons) == ["public.draws", "public.tickets"]
    with psycopg.connect(target, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO tickets (draw_id, sold_at, amount) VALUES (99, '2026-02-01', 1)")
    alone = fresh_db("_alone")
    assert restore_logical(settings, manifest.backup_id, alone, tables=["tickets"]).ok
    with psycopg.connect(alone) as conn:
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone()[0] == 0


def test_a_changed_row_in_one_partition_fails_the_comparison(backed_up, fresh_db):
    """The comparison is the backup's, over every leaf: a row changed after the restore in one
    partition is caught (the check can fail)."""
    from bvh_ops.logical.restore import compare_tables

    _, settings, manifest = backed_up
    target = fresh_db("_into")
    restore_logical(settings, manifest.backup_id, target, tables=["tickets"])
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE tickets_2026h2_odd SET amount = amount + 1 WHERE id = (SELECT min(id) FROM tickets_2026h2_odd)")
    assert [(c.name, c.ok) for c in compare_tables(target, manifest, ["tickets"])] == [("public.tickets", False)]


@pytest.mark.parametrize("asked, attached", [
    ("tickets_2026h1", {}),
    ("public.tickets_2026h2_odd", {}),  # a partition of a partition
    ("tickets_2026h2", {"tickets_2026h2_odd": "tickets_2026h2", "tickets_2026h2_rest": "tickets_2026h2"}),
])
def test_a_partition_alone_comes_back_as_a_table_of_its_own_and_is_compared(backed_up, fresh_db, asked, attached):
    """An accidentally truncated month: that partition restored into a scratch database and
    proven against the backup, without restoring (and reading) the whole partitioned table."""
    src, settings, manifest = backed_up
    target = fresh_db("_into")
    result = restore_logical(settings, manifest.backup_id, target, tables=[asked])
    name = "public." + asked.removeprefix("public.")
    assert [(c.name, c.ok) for c in result.comparisons] == [(name, True)] and result.ok
    with psycopg.connect(src) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    assert result.comparisons[0].actual_rows == rows > 0
    assert _attached(target, "rp") == attached  # not attached to a parent it does not have
    assert "public.tickets" not in _relations(target) and "public.wallets" not in _relations(target)
    # its partitioned table's serial, made here, goes on after every id the backup handed out
    # (it started at 1: the next insert took an id of a restored row)
    with psycopg.connect(target, autocommit=True) as conn:
        new_id = conn.execute(f"INSERT INTO {name} (draw_id, sold_at, amount) VALUES (1, '2026-08-01', 0) "
                              "RETURNING id").fetchone()[0]
        conn.execute(f"DELETE FROM {name} WHERE id = %s", (new_id,))
    with psycopg.connect(src) as conn:
        assert new_id == conn.execute("SELECT max(id) FROM tickets").fetchone()[0] + 1
    # the comparison is the partition's own: a changed row in it is caught
    leaf = asked.removeprefix("public.") if not attached else "tickets_2026h2_rest"
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(f"UPDATE {leaf} SET amount = amount + 1 WHERE id = (SELECT min(id) FROM {leaf})")
    assert [(c.name, c.ok) for c in compare_tables(target, manifest, [asked])] == [(name, False)]


@pytest.mark.parametrize("asked, whole", [
    (["tickets_2026h1"], "public.tickets"),
    (["public.tickets_2026h2_odd"], "public.tickets"),  # the top of its tree, not its own parent
    (["tickets_2026h2"], "public.tickets"),  # a partition that is partitioned itself
])
def test_a_partition_alone_from_a_backup_without_partition_fingerprints_is_refused(
        pg, fresh_db, make_settings, repo_dir, monkeypatch, asked, whole):
    import bvh_ops.logical.backup as backup

    monkeypatch.setattr(backup, "_partition_stats", lambda parts, fp: {})  # as backups before them
    settings = make_settings(_source(fresh_db, SOURCE), f"file://{repo_dir}")
    manifest = run_logical_backup(settings).manifest
    assert "partitions" not in manifest.extra
    target = fresh_db("_into")
    with pytest.raises(ConfigError, match=f"is a partition of {whole}: .* restore --table {whole} "):
        restore_logical(settings, manifest.backup_id, target, tables=asked)
    assert _relations(target) == set()  # nothing written


def test_a_partition_with_its_partitioned_table_is_part_of_the_whole(backed_up, fresh_db):
    _, settings, manifest = backed_up
    target = fresh_db("_into")
    result = restore_logical(settings, manifest.backup_id, target, tables=["tickets_2026h1", "tickets"])
    assert result.ok and [c.name for c in result.comparisons] == ["public.tickets"]
    assert _attached(target, "rp") == PARTITIONS
    # asked for with its grandparent only (not the partitioned partition between): still the whole's
    assert [(c.name, c.ok) for c in compare_tables(target, manifest, ["tickets_2026h2_odd", "tickets"])] == [
        ("public.tickets", True)]


def test_the_cli_restores_a_partition_alone_and_reports_its_comparison(pg, fresh_db, env_settings, repo_dir):
    import json

    from bvh_ops.config import load_settings
    from tests.integration.cli import run_cli

    env = env_settings(_source(fresh_db, SOURCE), f"file://{repo_dir}")
    run_logical_backup(load_settings())
    proc = run_cli("restore", "latest", "--into", fresh_db("_into"), "--table", "tickets_2026h1", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {name: t["ok"] for name, t in out["tables"].items()} == {"public.tickets_2026h1": True}, out


def test_a_partition_that_cannot_come_back_fails_the_restore_naming_it(pg, fresh_db, make_settings, repo_dir):
    """A foreign-table partition has no data in the dump and no TABLE entry --table takes: the
    restore went on without it, and the comparison (over the plain-table leaves it found) passed."""
    src = _source(fresh_db, [
        "CREATE FOREIGN DATA WRAPPER bvh_dummy_fdw",
        "CREATE SERVER bvh_dummy_server FOREIGN DATA WRAPPER bvh_dummy_fdw",
        "CREATE TABLE m (k int NOT NULL, v text) PARTITION BY RANGE (k)",
        "CREATE TABLE m_local PARTITION OF m FOR VALUES FROM (0) TO (100)",
        "CREATE FOREIGN TABLE m_remote PARTITION OF m FOR VALUES FROM (100) TO (200) SERVER bvh_dummy_server",
        "INSERT INTO m_local SELECT g, 'x' FROM generate_series(0, 99) g",
    ])
    settings = make_settings(src, f"file://{repo_dir}")
    manifest = run_logical_backup(settings).manifest
    target = fresh_db("_into")
    with pytest.raises(ConfigError, match=r"partition public\.m_remote of a table asked for cannot be restored"):
        restore_logical(settings, manifest.backup_id, target, tables=["m"])
    assert _relations(target) == set()
    # asked for alone: nothing of its own was recorded to compare it with
    with pytest.raises(ConfigError, match=r"partition of public\.m: the backup recorded no fingerprint of m_remote"):
        restore_logical(settings, manifest.backup_id, target, tables=["m_remote"])
    assert restore_logical(settings, manifest.backup_id, target, tables=["m_local"]).ok  # its sibling is


def test_a_tree_larger_than_half_the_servers_lock_table_is_restored_without_one_transaction(
        tmp_path, fresh_db, make_settings, repo_dir):
    """Every table, key and index of --table's list held a lock to the end of its one transaction:
    a partitioned table with more partitions than the server's lock table holds failed ("out of
    shared memory"). Restored entry by entry instead, whole and compared."""
    from bvh_ops.pg.catalog import create_database
    from bvh_ops.pg.cluster import EmbeddedCluster

    partitions = 120
    src = _source(fresh_db, [
        "CREATE TABLE big (k int PRIMARY KEY, v text) PARTITION BY RANGE (k)",
        "CREATE INDEX big_v ON big (v)",
        *(f"CREATE TABLE big_{i} PARTITION OF big FOR VALUES FROM ({i * 10}) TO ({i * 10 + 10})"
          for i in range(partitions)),
        f"INSERT INTO big SELECT g, g::text FROM generate_series(0, {partitions * 10 - 1}) g",
    ])
    settings = make_settings(src, f"file://{repo_dir}")
    manifest = run_logical_backup(settings).manifest
    # a server with a small lock table: 10 locks for each of a few backends
    small = EmbeddedCluster(tmp_path / "small", extra_conf={
        "max_locks_per_transaction": "10", "max_connections": "8", "max_wal_senders": "0",
        "max_worker_processes": "1", "autovacuum_max_workers": "1", "max_replication_slots": "0"})
    small.start()
    try:
        create_database(small.dsn(), "into")
        with psycopg.connect(small.dsn(), autocommit=True) as conn:
            room = conn.execute("SELECT current_setting('max_locks_per_transaction')::int * "
                                "current_setting('max_connections')::int").fetchone()[0]
        assert room < partitions * 4  # the list's tables and indexes alone would not fit
        result = restore_logical(settings, manifest.backup_id, small.dsn("into"), tables=["big"])
        assert result.ok and [c.name for c in result.comparisons] == ["public.big"]
        with psycopg.connect(small.dsn("into")) as conn:
            assert conn.execute("SELECT count(*) FROM big").fetchone()[0] == partitions * 10
            assert conn.execute("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                "WHERE c.relkind = 'r'").fetchone()[0] == partitions
    finally:
        small.destroy()


def test_a_partitioned_partition_without_a_plain_leaf_is_backed_up_and_restored_alone(pg, fresh_db, make_settings,
                                                                                      repo_dir):
    """Next quarter created ahead, no month under it yet (and one whose only leaf is foreign):
    the partitions query formatted a NULL leaf name and every backup of such a database failed."""
    settings, manifest = _backup_of(fresh_db, make_settings, repo_dir, [
        "CREATE FOREIGN DATA WRAPPER bvh_dummy_fdw3",
        "CREATE SERVER bvh_dummy_server3 FOREIGN DATA WRAPPER bvh_dummy_fdw3",
        "CREATE TABLE m (id int NOT NULL, k int NOT NULL) PARTITION BY LIST (k)",
        "CREATE TABLE m_1 PARTITION OF m FOR VALUES IN (1)",
        "CREATE TABLE m_future PARTITION OF m FOR VALUES IN (2) PARTITION BY RANGE (id)",  # none yet
        "CREATE TABLE m_mid PARTITION OF m FOR VALUES IN (3) PARTITION BY RANGE (id)",
        "CREATE FOREIGN TABLE m_remote PARTITION OF m_mid FOR VALUES FROM (0) TO (100) SERVER bvh_dummy_server3",
        "INSERT INTO m VALUES (1, 1)",
    ])
    assert set(manifest.extra["partitions"]) == {"public.m_1", "public.m_future", "public.m_mid"}
    result = restore_logical(settings, manifest.backup_id, fresh_db("_into"), tables=["m_future"])
    assert [(c.name, c.ok, c.actual_rows) for c in result.comparisons] == [("public.m_future", True, 0)]
