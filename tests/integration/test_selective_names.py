"""restore --table, by the names an operator writes: a table whose name holds a space or a dot,
two tables that are one name apart once the quotes are off ("a.b".c and a."b.c"), "Users" beside
users, and names that are not in the backup. Each asked table is restored with its indexes and
compared, or the restore fails naming it: never fewer tables restored or compared than asked."""

from __future__ import annotations

import psycopg
import pytest

from bvh_ops.errors import BvhOpsError, NotFound
from bvh_ops.logical.backup import run_logical_backup
from bvh_ops.logical.restore import restore_logical
from tests.integration.test_encodings import _relations

SOURCE = [
    'CREATE TABLE public."Mixed Case" (id int PRIMARY KEY, v text)',
    'CREATE INDEX "mc v" ON public."Mixed Case" (v)',
    'INSERT INTO public."Mixed Case" VALUES (1, \'x\'), (2, \'y\')',
    'CREATE SCHEMA "a.b"',
    'CREATE TABLE "a.b".c (id int PRIMARY KEY)',
    'INSERT INTO "a.b".c VALUES (1)',
    "CREATE SCHEMA a",
    'CREATE TABLE a."b.c" (id int PRIMARY KEY, w text)',
    'CREATE INDEX bc_w ON a."b.c" (w)',
    'INSERT INTO a."b.c" VALUES (1, \'p\'), (2, \'q\')',
    "CREATE SCHEMA s1",
    "CREATE TABLE s1.t (id int PRIMARY KEY)",
    "CREATE SCHEMA only_s",
    "CREATE TABLE only_s.lonely (id int PRIMARY KEY)",
    "CREATE TABLE users (id int PRIMARY KEY)",
    "INSERT INTO users VALUES (1)",
    'CREATE TABLE "Users" (id int PRIMARY KEY, n text)',
    'INSERT INTO "Users" VALUES (1, \'a\'), (2, \'b\'), (3, \'c\')',
    'CREATE SCHEMA "my schema"',
    'CREATE TABLE "my schema"."t t" (id int PRIMARY KEY)',
    'INSERT INTO "my schema"."t t" VALUES (1), (2)',
    # a role with a space in its name (cluster-wide: made once per test session's server)
    'DO $$ BEGIN CREATE ROLE "Ops Team"; EXCEPTION WHEN duplicate_object THEN NULL; END $$',
    "CREATE TABLE owned (id int PRIMARY KEY)",
    "INSERT INTO owned VALUES (7)",
    'ALTER TABLE owned OWNER TO "Ops Team"',
    "CREATE TABLE idt (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)",
    "INSERT INTO idt (v) VALUES ('a'), ('b')",
]


def _source(fresh_db, statements: list[str] = SOURCE) -> str:
    """A new database made by ``statements``."""
    src = fresh_db("_src")
    with psycopg.connect(src, autocommit=True) as conn:
        for stmt in statements:
            conn.execute(stmt)
    return src


def _backup_of(fresh_db, make_settings, repo_dir, statements: list[str]):
    """A new database made by ``statements``, backed up: (settings, manifest)."""
    settings = make_settings(_source(fresh_db, statements), f"file://{repo_dir}")
    return settings, run_logical_backup(settings).manifest


@pytest.fixture
def backed_up(pg, fresh_db, make_settings, repo_dir):
    settings = make_settings(_source(fresh_db), f"file://{repo_dir}")
    return settings, run_logical_backup(settings).manifest


@pytest.mark.parametrize(("spelling", "table", "relations"), [
    # its index ("mc v" ON public."Mixed Case") was left out: the index definition's table was read
    # up to the first space
    ('public."Mixed Case"', 'public."Mixed Case"', {'public."Mixed Case"', 'public."Mixed Case_pkey"', 'public."mc v"'}),
    # 'table a."b.c" is not in backup': the name was split at its last dot, inside the quotes
    ('a."b.c"', 'a."b.c"', {'a."b.c"', 'a."b.c_pkey"', "a.bc_w"}),
    ('"a.b".c', '"a.b".c', {'"a.b".c', '"a.b".c_pkey'}),
    ("users", "public.users", {"public.users", "public.users_pkey"}),
    ('"Users"', 'public."Users"', {'public."Users"', 'public."Users_pkey"'}),
    # 'table "my schema"."t t" is not in backup': `pg_restore -l` prints "TABLE my schema t t
    # postgres", read as schema "my", table "schema t t" (the archive's own entries are exact)
    ('"my schema"."t t"', '"my schema"."t t"', {'"my schema"."t t"', '"my schema"."t t_pkey"'}),
    # "TABLE public owned Ops Team": the owner's first word was read as part of the table's name
    ("owned", "public.owned", {"public.owned", "public.owned_pkey"}),
    # an identity column: its sequence (ALTER TABLE … ADD GENERATED) ran with the prerequisites,
    # before its table existed, and the setval then failed ("relation idt_id_seq does not exist")
    ("idt", "public.idt", {"public.idt", "public.idt_pkey"}),
])
def test_one_table_with_its_indexes_and_compared(backed_up, fresh_db, spelling, table, relations):
    settings, manifest = backed_up
    target = fresh_db("_into")
    result = restore_logical(settings, manifest.backup_id, target, tables=[spelling])
    assert [(c.name, c.ok) for c in result.comparisons] == [(table, True)]
    assert _relations(target) == relations


@pytest.mark.parametrize(("tables", "named"), [
    # s1.t was restored, s2.t (in no schema of the backup) passed as if restored: its TOC check
    # matched s1.t's entry by the table name alone
    (["s1.t", "s2.t"], "s2.t"),
    # only_s.lonely was restored (an unqualified name matched any schema) and compared as
    # public.lonely, which the backup has not: 0/0 tables, exit 0
    (["lonely"], "lonely"),
])
def test_a_table_not_in_the_backup_fails_naming_it(backed_up, fresh_db, tables, named):
    settings, manifest = backed_up
    with pytest.raises(NotFound, match=f"table {named} is not in backup"):
        restore_logical(settings, manifest.backup_id, fresh_db("_into"), tables=tables)


def test_a_name_of_three_parts_is_refused(backed_up, fresh_db):
    """'a.b.c' is no table name ("a.b".c or a."b.c"?): "a.b".c was restored, then compared as b.c
    (the first part dropped), which the backup has not — 0/0 tables, exit 0."""
    settings, manifest = backed_up
    target = fresh_db("_into")
    with pytest.raises(BvhOpsError, match="a.b.c"):
        restore_logical(settings, manifest.backup_id, target, tables=["a.b.c"])
    assert _relations(target) == set()
    # names that do not parse were each "not in backup" (exit 10): '' read "table  is not in backup"
    for bad, why in (('"unterminated', "quote is not closed"), ("", "empty name"), ("public.", "empty name"),
                     (".x", "empty name")):
        with pytest.raises(BvhOpsError, match=why):
            restore_logical(settings, manifest.backup_id, target, tables=[bad])
    assert _relations(target) == set()


def test_the_cli_says_so_in_one_line(pg, fresh_db, env_settings, repo_dir):
    from tests.integration.cli import assert_one_line_error, run_cli

    env = env_settings(_source(fresh_db), f"file://{repo_dir}")
    from bvh_ops.config import load_settings

    run_logical_backup(load_settings())
    target = fresh_db("_into")
    assert_one_line_error(run_cli("restore", "latest", "--into", target, "--table", "a.b.c", env=env),
                          'quote a name that holds a dot')
    assert_one_line_error(run_cli("restore", "latest", "--into", target, "--table", "s1.t", "--table", "s2.t",
                                  env=env), "table s2.t is not in backup")


def test_a_table_whose_default_draws_from_another_tables_sequence_comes_back(pg, fresh_db, make_settings, repo_dir):
    """One sequence shared by two tables (a global id): the table restored alone needs the
    sequence its default draws from, which belongs to the other table — where it exists, left as
    it is (the backup's value would rewind it); where it is missing, made and set to the backup's
    value, so the next id follows the ids the backup had handed out (it started at 1)."""
    settings, manifest = _backup_of(fresh_db, make_settings, repo_dir, [
        "CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric)",
        "CREATE TABLE refunds (id bigint PRIMARY KEY DEFAULT nextval('orders_id_seq'), amount numeric)",
        "INSERT INTO orders (total) SELECT g FROM generate_series(1, 50) g",
        "INSERT INTO refunds (amount) SELECT g FROM generate_series(1, 20) g",
    ])
    target = fresh_db("_into")
    with psycopg.connect(target, autocommit=True) as conn:  # the live sequence, further on than the backup's
        conn.execute("CREATE SEQUENCE orders_id_seq START 1000")
    result = restore_logical(settings, manifest.backup_id, target, tables=["refunds"])
    assert result.ok and [c.name for c in result.comparisons] == ["public.refunds"]
    with psycopg.connect(target, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM refunds").fetchone()[0] == 20
        assert conn.execute("INSERT INTO refunds (amount) VALUES (1) RETURNING id").fetchone()[0] == 1000  # not rewound
    alone = fresh_db("_alone")  # and into an empty database: made there, and moved forward
    result = restore_logical(settings, manifest.backup_id, alone, tables=["refunds"])
    assert result.ok and result.sequences_advanced == ("public.orders_id_seq",)
    with psycopg.connect(alone, autocommit=True) as conn:
        assert conn.execute("INSERT INTO refunds (amount) VALUES (1) RETURNING id").fetchone()[0] == 71
    restarted = fresh_db("_restarted")  # live, restarted further on and not used yet: left alone
    with psycopg.connect(restarted, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE orders_id_seq")
        conn.execute("ALTER SEQUENCE orders_id_seq RESTART WITH 1000")
    result = restore_logical(settings, manifest.backup_id, restarted, tables=["refunds"])
    assert result.ok and result.sequences_advanced == ()
    with psycopg.connect(restarted, autocommit=True) as conn:
        assert conn.execute("INSERT INTO refunds (amount) VALUES (1) RETURNING id").fetchone()[0] == 1000
    again = fresh_db("_again")  # left unused by an earlier attempt that failed: moved forward too
    with psycopg.connect(again, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE orders_id_seq")
    assert restore_logical(settings, manifest.backup_id, again, tables=["refunds"]).ok
    with psycopg.connect(again, autocommit=True) as conn:
        assert conn.execute("INSERT INTO refunds (amount) VALUES (1) RETURNING id").fetchone()[0] == 71


def test_sequences_by_what_the_archive_says_not_by_their_names(pg, fresh_db, make_settings, repo_dir):
    """A renamed table's serial keeps its old name (orders_id_seq, owned by purchases.id): found
    by the archive's dependencies, not by a name prefix; a sequence in another schema and one no
    table owns are made where missing; another table's identity sequence is refused, saying
    which table to add."""
    settings, manifest = _backup_of(fresh_db, make_settings, repo_dir, [
        "CREATE TABLE orders (id serial PRIMARY KEY, v int)",
        "ALTER TABLE orders RENAME TO purchases",
        "INSERT INTO purchases (v) SELECT g FROM generate_series(1, 10) g",
        "CREATE SCHEMA ids",
        "CREATE TABLE ids.counter (id bigserial PRIMARY KEY)",
        "CREATE TABLE items (id bigint PRIMARY KEY DEFAULT nextval('ids.counter_id_seq'), v int)",
        "INSERT INTO items (v) SELECT g FROM generate_series(1, 30) g",
        "CREATE SEQUENCE free_seq",  # owned by no table
        "CREATE TABLE other (id bigint PRIMARY KEY DEFAULT nextval('free_seq'))",
        "INSERT INTO other DEFAULT VALUES",
        "CREATE TABLE gen (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)",
        "CREATE TABLE lent (id bigint PRIMARY KEY DEFAULT nextval('gen_id_seq'))",
    ])
    target = fresh_db("_into")
    result = restore_logical(settings, manifest.backup_id, target, tables=["purchases"])
    assert result.ok
    with psycopg.connect(target, autocommit=True) as conn:  # its own serial, set: it goes on after the ids
        assert conn.execute("INSERT INTO purchases (v) VALUES (0) RETURNING id").fetchone()[0] == 11
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS ids")  # the prerequisites made it with purchases
        conn.execute("CREATE SEQUENCE ids.counter_id_seq START 700")
    assert restore_logical(settings, manifest.backup_id, target, tables=["items", "other"]).ok
    with psycopg.connect(target, autocommit=True) as conn:
        assert conn.execute("SELECT nextval('ids.counter_id_seq')").fetchone()[0] == 700  # not set back
    empty = fresh_db("_empty")  # made there: set to the backup's values
    assert restore_logical(settings, manifest.backup_id, empty, tables=["items", "other"]).ok
    with psycopg.connect(empty, autocommit=True) as conn:
        assert conn.execute("INSERT INTO items (v) VALUES (0) RETURNING id").fetchone()[0] == 31
        assert conn.execute("INSERT INTO other DEFAULT VALUES RETURNING id").fetchone()[0] == 2
    from bvh_ops.errors import ConfigError

    with pytest.raises(ConfigError, match=r"identity sequence of public\.gen.*add --table public\.gen"):
        restore_logical(settings, manifest.backup_id, fresh_db("_lent"), tables=["lent"])
    assert restore_logical(settings, manifest.backup_id, fresh_db("_both"), tables=["lent", "gen"]).ok


def test_a_live_shared_sequence_keeps_its_owner(pg, fresh_db, make_settings, repo_dir):
    """A global id sequence used by the application's role, one of its tables restored back into
    the live database: the sequence's CREATE fails there (tolerated), and the ALTER … OWNER TO
    that followed took it from the application (its inserts failed 'permission denied')."""
    schema = [
        'DO $$ BEGIN CREATE ROLE "bvh src owner"; EXCEPTION WHEN duplicate_object THEN NULL; END $$',
        "DO $$ BEGIN CREATE ROLE bvh_app_role; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "CREATE SEQUENCE global_id",
        "CREATE TABLE orders (id bigint PRIMARY KEY DEFAULT nextval('global_id'), total numeric)",
        "CREATE TABLE refunds (id bigint PRIMARY KEY DEFAULT nextval('global_id'), amount numeric)",
    ]
    settings, manifest = _backup_of(fresh_db, make_settings, repo_dir, [
        *schema, 'ALTER SEQUENCE global_id OWNER TO "bvh src owner"', 'ALTER TABLE orders OWNER TO "bvh src owner"',
        'ALTER TABLE refunds OWNER TO "bvh src owner"', "INSERT INTO refunds (amount) SELECT g FROM generate_series(1, 20) g"])
    live = fresh_db("_live")
    with psycopg.connect(live, autocommit=True) as conn:
        for stmt in [*schema, "DROP TABLE refunds", "SELECT setval('global_id', 1000)",
                     "ALTER SEQUENCE global_id OWNER TO bvh_app_role", "ALTER TABLE orders OWNER TO bvh_app_role"]:
            conn.execute(stmt)
    assert restore_logical(settings, manifest.backup_id, live, tables=["refunds"]).ok
    with psycopg.connect(live, autocommit=True) as conn:
        conn.execute("SET ROLE bvh_app_role")
        assert conn.execute("INSERT INTO orders (total) VALUES (1) RETURNING id").fetchone()[0] == 1001


def test_what_hangs_off_a_table_restored_alone_is_named_not_restored(pg, fresh_db, env_settings, repo_dir):
    """Triggers, row security, policies and grants do not come back with a table restored alone
    (a policy may read a table left out, a grant name a role the target lacks): each is named, in
    the JSON and on the terminal, so the operator re-creates it — not silently missing."""
    import json

    from bvh_ops.config import load_settings
    from tests.integration.cli import run_cli

    src = _source(fresh_db, [
        "DO $$ BEGIN CREATE ROLE bvh_app_role; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "CREATE TABLE wallets (id serial PRIMARY KEY, owner text NOT NULL, changed_at timestamptz)",
        "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.changed_at := now(); RETURN NEW; END $$",
        "CREATE TRIGGER wallets_stamp BEFORE INSERT ON wallets FOR EACH ROW EXECUTE FUNCTION stamp()",
        "ALTER TABLE wallets ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY own_wallet ON wallets USING (owner = current_user)",
        "GRANT SELECT ON wallets TO bvh_app_role",
        "CREATE TABLE other (id int)",
        "CREATE TRIGGER other_stamp BEFORE INSERT ON other FOR EACH ROW EXECUTE FUNCTION stamp()",
        "INSERT INTO wallets (owner) VALUES ('a'), ('b')",
    ])
    env = env_settings(src, f"file://{repo_dir}")
    run_logical_backup(load_settings())
    proc = run_cli("restore", "latest", "--into", fresh_db("_json"), "--table", "wallets", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    left = json.loads(proc.stdout)["left_out"]
    assert sorted(left) == ["grants public.TABLE wallets", "policy public.wallets own_wallet",
                            "row security public.wallets", "trigger public.wallets wallets_stamp"]
    target = fresh_db("_text")
    proc = run_cli("restore", "latest", "--into", target, "--table", "wallets", env=env)
    assert proc.returncode == 0 and "not restored with the table" in proc.stdout
    assert "trigger public.wallets wallets_stamp" in proc.stdout and "other_stamp" not in proc.stdout
    with psycopg.connect(target) as conn:  # as said: the table without its trigger
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone()[0] == 0
