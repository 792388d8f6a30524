"""pg_restore table-of-contents lists (bvh_ops.logical.toc) over lines as `pg_restore -l` prints
them (taken from pg_dump 18 and 15 archives of a small schema: a table whose name has a space, a
serial, a foreign key, an index, a comment, a materialized view and a large object)."""

from __future__ import annotations

import pytest

from bvh_ops.logical.archive import TocEntry
from bvh_ops.logical.toc import (
    balance,
    left_out,
    parse_entry,
    partition_tree,
    selective_lists,
    unset_sequences,
    with_partitions,
)

# `pg_restore -l` of a pg_dump 18 custom archive, header included.
TOC_18 = """\
;
; Archive created at 2026-11-28 09:09:16 UTC
;     dbname: shapes
;     TOC Entries: 29
;     Compression: gzip
;     Dump Version: 1.16-0
;     Format: CUSTOM
;
; Selected TOC Entries:
;
6; 2615 17661 SCHEMA - audit postgres
843; 1247 17663 TYPE public draw_state postgres
219; 1259 17687 TABLE audit Log Entries postgres
216; 1259 17668 TABLE public draws postgres
3379; 0 0 COMMENT public TABLE draws postgres
215; 1259 17667 SEQUENCE public draws_id_seq postgres
3380; 0 0 SEQUENCE OWNED BY public draws_id_seq postgres
218; 1259 17675 TABLE public tickets postgres
220; 1259 17692 MATERIALIZED VIEW public mv postgres
217; 1259 17674 SEQUENCE public tickets_id_seq postgres
3381; 0 0 SEQUENCE OWNED BY public tickets_id_seq postgres
3214; 2604 17671 DEFAULT public draws id postgres
3215; 2604 17678 DEFAULT public tickets id postgres
3369; 0 17687 TABLE DATA audit Log Entries postgres
3366; 0 17668 TABLE DATA public draws postgres
3368; 0 17675 TABLE DATA public tickets postgres
3382; 0 0 SEQUENCE SET public draws_id_seq postgres
3383; 0 0 SEQUENCE SET public tickets_id_seq postgres
3371; 2613 17696 BLOB METADATA - 17696 postgres
3372; 0 0 BLOBS - 17696 postgres
3217; 2606 17673 CONSTRAINT public draws draws_pkey postgres
3220; 2606 17680 CONSTRAINT public tickets tickets_pkey postgres
3218; 1259 17686 INDEX public tickets_draw_idx postgres
3221; 2606 17681 FK CONSTRAINT public tickets tickets_draw_id_fkey postgres
3370; 0 17692 MATERIALIZED VIEW DATA public mv postgres
""".splitlines()


@pytest.mark.parametrize("line, parsed", [
    ("6; 2615 17661 SCHEMA - audit postgres", ("SCHEMA", "-", "audit")),
    ("843; 1247 17663 TYPE public draw_state postgres", ("TYPE", "public", "draw_state")),
    ("216; 1259 17668 TABLE public draws postgres", ("TABLE", "public", "draws")),
    ("219; 1259 17687 TABLE audit Log Entries postgres", ("TABLE", "audit", "Log Entries")),
    ("3366; 0 17668 TABLE DATA public draws postgres", ("TABLE DATA", "public", "draws")),
    ("3369; 0 17687 TABLE DATA audit Log Entries postgres", ("TABLE DATA", "audit", "Log Entries")),
    ("215; 1259 17667 SEQUENCE public draws_id_seq postgres", ("SEQUENCE", "public", "draws_id_seq")),
    ("3380; 0 0 SEQUENCE OWNED BY public draws_id_seq postgres", ("SEQUENCE OWNED BY", "public", "draws_id_seq")),
    ("3382; 0 0 SEQUENCE SET public draws_id_seq postgres", ("SEQUENCE SET", "public", "draws_id_seq")),
    ("3214; 2604 17671 DEFAULT public draws id postgres", ("DEFAULT", "public", "draws id")),
    ("3217; 2606 17673 CONSTRAINT public draws draws_pkey postgres", ("CONSTRAINT", "public", "draws draws_pkey")),
    ("3218; 1259 17686 INDEX public tickets_draw_idx postgres", ("INDEX", "public", "tickets_draw_idx")),
    ("3221; 2606 17681 FK CONSTRAINT public tickets tickets_draw_id_fkey postgres",
     ("FK CONSTRAINT", "public", "tickets tickets_draw_id_fkey")),
    ("3379; 0 0 COMMENT public TABLE draws postgres", ("COMMENT", "public", "TABLE draws")),
    ("220; 1259 17692 MATERIALIZED VIEW public mv postgres", ("MATERIALIZED VIEW", "public", "mv")),
    ("3370; 0 17692 MATERIALIZED VIEW DATA public mv postgres", ("MATERIALIZED VIEW DATA", "public", "mv")),
    # Large objects: PostgreSQL 17+ ...
    ("3371; 2613 17696 BLOB METADATA - 17696 postgres", ("BLOB METADATA", "-", "17696")),
    ("3372; 0 0 BLOBS - 17696 postgres", ("BLOBS", "-", "17696")),
    # ... and up to 16 (the BLOBS line has no owner, and a trailing space)
    ("3371; 2613 17696 BLOB - 17696 postgres", ("BLOB", "-", "17696")),
    ("3372; 0 0 BLOBS - BLOBS ", ("BLOBS", "-", "BLOBS")),
    ("3400; 0 0 ACL - SCHEMA public pg_database_owner", ("ACL", "-", "SCHEMA public")),
    ("3401; 1259 17700 INDEX ATTACH public log_2026_pkey postgres", ("INDEX ATTACH", "public", "log_2026_pkey")),
    # Comments, blank lines and commented-out entries (as an edited -L list has them)
    (";", None),
    (";     dbname: shapes", None),
    (";216; 1259 17668 TABLE public draws postgres", None),
    ("", None),
])
def test_parse_entry(line, parsed):
    assert parse_entry(line) == parsed


def test_every_entry_of_a_real_list_parses():
    entries = [parse_entry(ln) for ln in TOC_18]
    assert sum(e is None for e in entries) == 10  # the header
    descs = {e[0] for e in entries if e}
    assert descs == {"SCHEMA", "TYPE", "TABLE", "COMMENT", "SEQUENCE", "SEQUENCE OWNED BY", "MATERIALIZED VIEW",
                     "DEFAULT", "TABLE DATA", "SEQUENCE SET", "BLOB METADATA", "BLOBS", "CONSTRAINT", "INDEX",
                     "FK CONSTRAINT", "MATERIALIZED VIEW DATA"}


def _ids(lines: list[str]) -> list[str]:
    return [ln.split(";")[0] for ln in lines]


@pytest.mark.parametrize("tables, indexes, prereq, own", [
    # A table with a serial and an index: its sequence is a prerequisite; its own entries in
    # restore order (table, owned-by, default, data, setval, constraint, index); not its FK.
    (["tickets"], {"public.tickets_draw_idx"},
     ["6", "843", "217"],
     ["218", "3381", "3215", "3368", "3383", "3220", "3218"]),
    (["public.draws"], set(),
     ["6", "843", "215"],
     ["216", "3380", "3214", "3366", "3382", "3217"]),
    # An index is the table's only when the manifest says so.
    (["tickets"], set(),
     ["6", "843", "217"],
     ["218", "3381", "3215", "3368", "3383", "3220"]),
    # Schema-qualified and quoted: the other schema's tables are not taken.
    (['audit."Log Entries"'], set(), ["6", "843"], ["219", "3369"]),
    (["audit.draws"], set(), ["6", "843"], []),
    # Two tables at once.
    (["draws", "tickets"], {"public.tickets_draw_idx"},
     ["6", "843", "215", "217"],
     ["216", "218", "3380", "3381", "3214", "3215", "3366", "3368", "3382", "3383", "3217", "3220", "3218"]),
    # Nothing of a table not in the archive, the prerequisites still (schemas and types).
    (["nope"], set(), ["6", "843"], []),
])
def test_selective_lists(tables, indexes, prereq, own):
    got_prereq, got_own = selective_lists(TOC_18, tables, indexes)
    assert _ids(got_prereq) == prereq
    assert _ids(got_own) == own


def test_selective_lists_never_take_comments_blobs_views_or_foreign_keys():
    prereq, own = selective_lists(TOC_18, ["draws", "tickets", "mv"], {"public.tickets_draw_idx"})
    kinds = {parse_entry(ln)[0] for ln in prereq + own}
    assert not kinds & {"COMMENT", "BLOB METADATA", "BLOBS", "FK CONSTRAINT", "MATERIALIZED VIEW",
                        "MATERIALIZED VIEW DATA"}


def test_a_table_named_like_the_prefix_of_another_takes_only_its_own_sequences():
    toc = [
        "215; 1259 17667 SEQUENCE public draws_id_seq postgres",
        "216; 1259 17668 TABLE public draws postgres",
        "217; 1259 17669 SEQUENCE public draws_history_id_seq postgres",
        "218; 1259 17670 TABLE public draws_history postgres",
        "3380; 0 0 SEQUENCE OWNED BY public draws_id_seq postgres",
        "3381; 0 0 SEQUENCE OWNED BY public draws_history_id_seq postgres",
    ]
    prereq, own = selective_lists(toc, ["draws"])
    # draws_history_id_seq OWNED BY draws_history.id cannot be restored without draws_history.
    assert _ids(prereq) == ["215"] and _ids(own) == ["216", "3380"]


def test_a_table_name_with_a_space_keeps_its_defaults_and_keys():
    toc = [
        "219; 1259 17687 TABLE audit Log Entries postgres",
        "3216; 2604 17690 DEFAULT audit Log Entries id postgres",
        "3369; 0 17687 TABLE DATA audit Log Entries postgres",
        "3222; 2606 17691 CONSTRAINT audit Log Entries Log Entries_pkey postgres",
    ]
    _, own = selective_lists(toc, ['audit."Log Entries"'])
    assert _ids(own) == ["219", "3216", "3369", "3222"]


def _entries(weights: list[int]) -> list[tuple[str, int]]:
    return [(f"{i}; 0 0 TABLE DATA public t{i} postgres", w) for i, w in enumerate(weights)]


@pytest.mark.parametrize("weights, jobs, bins", [
    # largest first onto the lightest list; each list in archive order
    ([100, 60, 50, 10], 2, [[0, 3], [1, 2]]),
    ([10, 50, 60, 100], 2, [[0, 3], [1, 2]]),
    ([5, 5, 5, 5, 5, 5], 3, [[0, 3], [1, 4], [2, 5]]),
    ([1000, 1, 1, 1], 2, [[0], [1, 2, 3]]),
    ([1000, 1, 1, 1], 4, [[0], [1], [2], [3]]),
    # more jobs than entries: no empty lists
    ([7, 3], 8, [[0], [1]]),
    # zero or unknown weights count as 1, so they still spread
    ([0, 0, 0, 0], 2, [[0, 2], [1, 3]]),
    # one job (or a nonsense count): one list, archive order
    ([3, 9, 1], 1, [[0, 1, 2]]),
    ([3, 9, 1], 0, [[0, 1, 2]]),
    ([], 4, []),
])
def test_balance(weights, jobs, bins):
    entries = _entries(weights)
    got = balance(entries, jobs)
    assert [[int(ln.split(";")[0]) for ln in b] for b in got] == bins


@pytest.mark.parametrize("jobs", [1, 2, 3, 5])
def test_balance_keeps_every_entry_once_in_archive_order_and_evens_the_load(jobs):
    weights = [13, 400, 7, 7, 250, 90, 1, 1, 1, 300, 55, 60, 8, 120]
    entries = _entries(weights)
    got = balance(entries, jobs)
    flat = [ln for b in got for ln in b]
    assert sorted(flat) == sorted(ln for ln, _ in entries)
    position = {ln: i for i, (ln, _) in enumerate(entries)}
    for b in got:
        assert [position[ln] for ln in b] == sorted(position[ln] for ln in b)
    load = [sum(dict(entries)[ln] for ln in b) for b in got]
    # Greedy largest-first: no list exceeds the ideal share by more than the largest entry.
    assert max(load) <= sum(weights) / jobs + max(weights)


# A partitioned table (pg_dump 15): tickets by half-year, its second half by draw, with a
# serial, a primary key and an index on the parent (each partition has its own, attached);
# and a plain table beside it. `pg_restore -l` lines, then the archive's own entries with their
# dependencies (bvh_ops.logical.archive.read_toc), as the restore reads both.
PARTED_TOC = """\
215; 1259 16855 TABLE public tickets postgres
214; 1259 16854 SEQUENCE public tickets_id_seq postgres
3402; 0 0 SEQUENCE OWNED BY public tickets_id_seq postgres
216; 1259 16862 TABLE public tickets_2026h1 postgres
217; 1259 16869 TABLE public tickets_2026h2 postgres
218; 1259 16876 TABLE public tickets_2026h2_odd postgres
219; 1259 16883 TABLE public tickets_2026h2_rest postgres
220; 1259 16890 TABLE public tickets_archive postgres
3217; 0 0 TABLE ATTACH public tickets_2026h1 postgres
3218; 0 0 TABLE ATTACH public tickets_2026h2 postgres
3219; 0 0 TABLE ATTACH public tickets_2026h2_odd postgres
3220; 0 0 TABLE ATTACH public tickets_2026h2_rest postgres
3221; 2604 16858 DEFAULT public tickets id postgres
3392; 0 16862 TABLE DATA public tickets_2026h1 postgres
3393; 0 16876 TABLE DATA public tickets_2026h2_odd postgres
3394; 0 16883 TABLE DATA public tickets_2026h2_rest postgres
3395; 0 16890 TABLE DATA public tickets_archive postgres
3403; 0 0 SEQUENCE SET public tickets_id_seq postgres
3228; 2606 16860 CONSTRAINT public tickets tickets_pkey postgres
3231; 2606 16867 CONSTRAINT public tickets_2026h1 tickets_2026h1_pkey postgres
3234; 2606 16874 CONSTRAINT public tickets_2026h2 tickets_2026h2_pkey postgres
3237; 2606 16881 CONSTRAINT public tickets_2026h2_odd tickets_2026h2_odd_pkey postgres
3240; 2606 16888 CONSTRAINT public tickets_2026h2_rest tickets_2026h2_rest_pkey postgres
3226; 1259 16861 INDEX public tickets_draw postgres
3229; 1259 16868 INDEX public tickets_2026h1_draw_id_idx postgres
3232; 1259 16875 INDEX public tickets_2026h2_draw_id_idx postgres
3235; 1259 16882 INDEX public tickets_2026h2_odd_draw_id_idx postgres
3238; 1259 16889 INDEX public tickets_2026h2_rest_draw_id_idx postgres
3241; 0 0 INDEX ATTACH public tickets_2026h1_draw_id_idx postgres
3242; 0 0 INDEX ATTACH public tickets_2026h1_pkey postgres
3243; 0 0 INDEX ATTACH public tickets_2026h2_draw_id_idx postgres
3245; 0 0 INDEX ATTACH public tickets_2026h2_odd_draw_id_idx postgres
3246; 0 0 INDEX ATTACH public tickets_2026h2_odd_pkey postgres
3244; 0 0 INDEX ATTACH public tickets_2026h2_pkey postgres
3247; 0 0 INDEX ATTACH public tickets_2026h2_rest_draw_id_idx postgres
3248; 0 0 INDEX ATTACH public tickets_2026h2_rest_pkey postgres
""".splitlines()
PARTED_ENTRIES = [TocEntry(dump_id, desc, "public", tag, "", False, deps=deps) for dump_id, desc, tag, deps in [
    (215, 'TABLE', 'tickets', ()),
    (214, 'SEQUENCE', 'tickets_id_seq', (215,)),
    (3402, 'SEQUENCE OWNED BY', 'tickets_id_seq', (214,)),
    (216, 'TABLE', 'tickets_2026h1', (214, 215)),
    (217, 'TABLE', 'tickets_2026h2', (214, 215)),
    (218, 'TABLE', 'tickets_2026h2_odd', (214, 217)),
    (219, 'TABLE', 'tickets_2026h2_rest', (214, 217)),
    (220, 'TABLE', 'tickets_archive', ()),
    (3217, 'TABLE ATTACH', 'tickets_2026h1', (216, 215)),
    (3218, 'TABLE ATTACH', 'tickets_2026h2', (217, 215)),
    (3219, 'TABLE ATTACH', 'tickets_2026h2_odd', (218, 217)),
    (3220, 'TABLE ATTACH', 'tickets_2026h2_rest', (219, 217)),
    (3221, 'DEFAULT', 'tickets id', (215, 214, 215)),
    (3392, 'TABLE DATA', 'tickets_2026h1', (216,)),
    (3393, 'TABLE DATA', 'tickets_2026h2_odd', (218,)),
    (3394, 'TABLE DATA', 'tickets_2026h2_rest', (219,)),
    (3395, 'TABLE DATA', 'tickets_archive', (220,)),
    (3403, 'SEQUENCE SET', 'tickets_id_seq', (214,)),
    (3228, 'CONSTRAINT', 'tickets tickets_pkey', (215, 215, 215)),
    (3231, 'CONSTRAINT', 'tickets_2026h1 tickets_2026h1_pkey', (216, 216, 216, 3228, 216)),
    (3234, 'CONSTRAINT', 'tickets_2026h2 tickets_2026h2_pkey', (217, 217, 3228, 217, 217)),
    (3237, 'CONSTRAINT', 'tickets_2026h2_odd tickets_2026h2_odd_pkey', (218, 218, 218, 3234, 218)),
    (3240, 'CONSTRAINT', 'tickets_2026h2_rest tickets_2026h2_rest_pkey', (219, 3234, 219, 219, 219)),
    (3226, 'INDEX', 'tickets_draw', (215,)),
    (3229, 'INDEX', 'tickets_2026h1_draw_id_idx', (216, 216, 3226)),
    (3232, 'INDEX', 'tickets_2026h2_draw_id_idx', (3226, 217, 217)),
    (3235, 'INDEX', 'tickets_2026h2_odd_draw_id_idx', (218, 218, 3232)),
    (3238, 'INDEX', 'tickets_2026h2_rest_draw_id_idx', (219, 3232, 219)),
    (3241, 'INDEX ATTACH', 'tickets_2026h1_draw_id_idx', (3229, 3226, 216, 215)),
    (3242, 'INDEX ATTACH', 'tickets_2026h1_pkey', (3228, 216, 3231, 3228, 216, 215)),
    (3243, 'INDEX ATTACH', 'tickets_2026h2_draw_id_idx', (3232, 3226, 217, 215)),
    (3245, 'INDEX ATTACH', 'tickets_2026h2_odd_draw_id_idx', (3235, 3232, 218, 217)),
    (3246, 'INDEX ATTACH', 'tickets_2026h2_odd_pkey', (218, 3237, 3228, 3234, 217, 3228, 3234, 217, 218, 217)),
    (3244, 'INDEX ATTACH', 'tickets_2026h2_pkey', (3228, 3234, 217, 3228, 217, 215)),
    (3247, 'INDEX ATTACH', 'tickets_2026h2_rest_draw_id_idx', (3238, 3232, 219, 217)),
    (3248, 'INDEX ATTACH', 'tickets_2026h2_rest_pkey', (3228, 3234, 217, 3240, 219, 3228, 3234, 217, 219, 217)),
]]
PARTED = ["tickets", "tickets_2026h1", "tickets_2026h2", "tickets_2026h2_odd", "tickets_2026h2_rest"]
PARTED_INDEXES = {"public.tickets_draw"} | {f"public.{t}_draw_id_idx" for t in PARTED[1:]}


def test_the_partition_tree_comes_from_the_attach_entries_dependencies():
    assert partition_tree(PARTED_ENTRIES) == {
        ("public", "tickets"): [("public", "tickets_2026h1"), ("public", "tickets_2026h2")],
        ("public", "tickets_2026h2"): [("public", "tickets_2026h2_odd"), ("public", "tickets_2026h2_rest")],
    }


@pytest.mark.parametrize("asked, expanded", [
    (["tickets"], PARTED),  # sub-partitions too
    (["tickets_2026h2"], PARTED[2:]),
    (["tickets_2026h1"], ["tickets_2026h1"]),  # a leaf: itself
    (["tickets_archive", "tickets", "tickets_2026h1"], ["tickets_archive", *PARTED]),  # each once, asked first
])
def test_with_partitions_adds_every_partition_below_each_asked_table(asked, expanded):
    tree = partition_tree(PARTED_ENTRIES)
    got = with_partitions([("public", t) for t in asked], tree)
    assert got == [("public", t) for t in expanded]


def test_a_partitioned_table_is_restored_with_its_partitions_attached_and_their_indexes_attached_to_its():
    prereq, own = selective_lists(PARTED_TOC, PARTED, PARTED_INDEXES, PARTED_ENTRIES)
    assert _ids(prereq) == ["214"]  # the serial's sequence
    assert _ids(own) == [
        "215", "216", "217", "218", "219",  # the tables, then each attached to its parent before its data
        "3217", "3218", "3219", "3220",
        "3402", "3221", "3392", "3393", "3394", "3403",  # owned-by, default, data, setval
        "3228", "3231", "3234", "3237", "3240",  # the primary keys, the parent's first
        "3226", "3229", "3232", "3235", "3238",  # the indexes, the parent's first
        "3241", "3242", "3243", "3245", "3246", "3244", "3247", "3248",  # each attached to its parent's
    ]
    assert "220" not in _ids(own) and "3395" not in _ids(own)  # the plain table beside it


def test_a_partition_alone_comes_back_as_a_table_of_its_own_without_attach_entries():
    prereq, own = selective_lists(PARTED_TOC, ["tickets_2026h1"], {"public.tickets_2026h1_draw_id_idx"},
                                  PARTED_ENTRIES)
    # Its ATTACH entries depend on the parent's table and indexes, which are not restored: an
    # ATTACH would fail the strict list.
    assert _ids(own) == ["216", "3392", "3231", "3229"]


def test_the_serial_a_partition_alone_draws_from_is_named_with_the_backups_value():
    """The partitioned table's serial is a prerequisite of its partition restored alone, and
    nothing the partition restores sets it: it is named with the backup's value (from its
    SEQUENCE SET entry), for the restore to move it forward where the target's is behind. The
    whole table sets its own."""
    setval = "SELECT pg_catalog.setval('public.tickets_id_seq', 1000, true);\n"
    entries = [TocEntry(e.dump_id, e.desc, e.namespace, e.tag, setval if e.dump_id == 3403 else e.defn, False,
                        deps=e.deps) for e in PARTED_ENTRIES]
    prereq, own = selective_lists(PARTED_TOC, ["tickets_2026h1"], {"public.tickets_2026h1_draw_id_idx"}, entries)
    assert unset_sequences(prereq, own, entries) == [(("public", "tickets_id_seq"), 1000, True)]
    whole_prereq, whole_own = selective_lists(PARTED_TOC, PARTED, PARTED_INDEXES, entries)
    assert unset_sequences(whole_prereq, whole_own, entries) == []
    assert unset_sequences(prereq, own, []) == []  # without the archive's entries: nothing named


def test_what_hangs_off_a_restored_table_and_is_not_restored_is_named():
    """A trigger, its comment, a policy, row security and grants of the restored table (and of its
    own serial) are named as left out; another table's are not."""
    toc = [
        "215; 1259 1 SEQUENCE public wallets_id_seq postgres",
        "216; 1259 2 TABLE public wallets postgres",
        "217; 1259 3 TABLE public other postgres",
        "3380; 0 0 SEQUENCE OWNED BY public wallets_id_seq postgres",
        "3381; 0 4 TABLE DATA public wallets postgres",
        "3382; 0 0 SEQUENCE SET public wallets_id_seq postgres",
    ]
    entries = [TocEntry(i, d, "public", t, "", False, deps=deps) for i, d, t, deps in [
        (215, "SEQUENCE", "wallets_id_seq", (216,)), (216, "TABLE", "wallets", ()), (217, "TABLE", "other", ()),
        (3380, "SEQUENCE OWNED BY", "wallets_id_seq", (215,)), (3381, "TABLE DATA", "wallets", (216,)),
        (3382, "SEQUENCE SET", "wallets_id_seq", (215,)),
        (3400, "TRIGGER", "wallets wallets_stamp", (216, 100)), (3401, "COMMENT", "TRIGGER wallets_stamp", (3400,)),
        (3402, "ROW SECURITY", "wallets", (216,)), (3403, "POLICY", "wallets own_wallet", (216, 217)),
        (3404, "TRIGGER", "other other_t", (217,)), (3405, "ACL", "TABLE wallets", (216,)),
        (3406, "ACL", "SEQUENCE wallets_id_seq", (215,)), (3407, "ACL", "TABLE other", (217,)),
    ]]
    _, own = selective_lists(toc, ["wallets"], set(), entries)
    assert left_out(own, entries) == [
        "trigger public.wallets wallets_stamp", "comment public.TRIGGER wallets_stamp", "row security public.wallets",
        "policy public.wallets own_wallet", "grants public.TABLE wallets", "grants public.SEQUENCE wallets_id_seq"]


def test_without_the_archive_entries_no_attach_entry_is_taken():
    _, own = selective_lists(PARTED_TOC, PARTED, PARTED_INDEXES)
    assert not {parse_entry(ln)[0] for ln in own} & {"TABLE ATTACH", "INDEX ATTACH"}


# The foreign key of TOC_18 as pg_dump records it: it depends on its table, the table it
# references and that table's key (dumpIds of TOC_18's lines).
FK_ENTRIES = [TocEntry(3221, "FK CONSTRAINT", "public", "tickets tickets_draw_id_fkey", "", False,
                       deps=(216, 218, 3217))]


@pytest.mark.parametrize("tables, with_key", [
    (["draws", "tickets"], True),  # both ends restored: the key comes last, after the indexes
    (["tickets"], False),  # the referenced table is not restored: no key (it would fail the list)
    (["draws"], False),
])
def test_a_foreign_key_comes_back_when_both_its_tables_do(tables, with_key):
    _, own = selective_lists(TOC_18, tables, {"public.tickets_draw_idx"}, FK_ENTRIES)
    assert ("3221" in _ids(own)) is with_key
    if with_key:
        assert _ids(own)[-1] == "3221"
