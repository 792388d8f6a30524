"""restore --table of a partitioned table: it comes back whole — every partition (and theirs)
with its rows, attached to its parent, the parent's primary key and indexes over them, the serial
going on — and compared against the backup's fingerprint of the table as a whole. A partition
asked for alone is refused, naming its partitioned table: the backup proves only the whole
(partitions are not tables of their own in the manifest), and a restore whose comparison cannot
run must not report one. On the code before, every test here failed."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.errors import ConfigError
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import restore_logical
from tests.integration.test_encodings import _relations
from tests.integration.test_selective_names import _source

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


@pytest.mark.parametrize("asked, whole", [
    (["tickets_2026h1"], "public.tickets"),
    (["public.tickets_2026h2_odd"], "public.tickets"),  # the top of its tree, not its own parent
    (["tickets_2026h2"], "public.tickets"),  # a partition that is partitioned itself
])
def test_a_partition_alone_is_refused_naming_its_partitioned_table(backed_up, fresh_db, asked, whole):
    _, settings, manifest = backed_up
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


def test_the_cli_refuses_a_partition_alone_in_one_line(pg, fresh_db, env_settings, repo_dir):
    from bvh_ops.config import load_settings
    from tests.integration.cli import assert_one_line_error, run_cli

    env = env_settings(_source(fresh_db, SOURCE), f"file://{repo_dir}")
    run_logical_backup(load_settings())
    assert_one_line_error(run_cli("restore", "latest", "--into", fresh_db("_into"), "--table", "tickets_2026h1",
                                  env=env), "is a partition of public.tickets")
