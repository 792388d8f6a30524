"""The maintenance planner, table-tested on catalog facts: which table gets ANALYZE, VACUUM,
FREEZE or (allow-listed only) VACUUM FULL per scope, which index is rebuilt, what is only
reported (unused, duplicate, sequences, sessions, slots), and the maintenance window."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time

import pytest

from bvh_ops.config import MaintenanceSettings
from bvh_ops.maintenance.facts import Facts, IndexFact, SequenceFact, SessionFact, SlotFact, TableFact
from bvh_ops.maintenance.plan import in_window, plan
from bvh_ops.pg.ident import quote_ident

# Sunday 3 March 2030, 03:00 UTC: inside the default window (01:00-06:00 every day).
NOW = datetime(2030, 3, 3, 3, 0, tzinfo=UTC)
CFG = MaintenanceSettings()
GiB = 1 << 30


def table(name="t", *, rows=10_000, dead=0, mods=0, age=1000, bloat=0, size=8 << 20) -> TableFact:
    return TableFact("public", name, float(rows), rows, dead, mods, None, None, age, size, bloat, "statistics")


def index(name="t_i", *, valid=True, building=False, scans=5, backs=False, size=8 << 20, bloat=0,
          definition="CREATE INDEX ON public.t USING btree (a)") -> IndexFact:
    return IndexFact("public", "t", name, valid, building, scans, backs, size, definition, bloat, "statistics")


def facts(tables=(), indexes=(), sequences=(), sessions=(), slots=(), in_recovery=False) -> Facts:
    return Facts(NOW, "lottery", 180000, in_recovery, 200_000_000, tuple(tables), tuple(indexes), tuple(sequences),
                 tuple(sessions), tuple(slots))


def acts(p):
    return [(a.kind, a.object) for a in p.actions]


@pytest.mark.parametrize("scope, t, expected", [
    # analyze: 50 + 0.1 x 10,000 = 1,050 modifications
    ("daily", table(mods=1_051), [("analyze", "public.t")]),
    ("daily", table(mods=1_050), []),                                       # at the threshold: not past it
    ("daily", table(mods=0, dead=9_000), []),                               # daily never vacuums
    ("daily", table(age=190_000_000), []),                                  # nor freezes
    # vacuum: 50 + 0.2 x 10,000 = 2,050 dead tuples
    ("weekly", table(dead=2_051), [("vacuum", "public.t")]),
    ("weekly", table(dead=2_050), []),
    ("weekly", table(dead=2_051, mods=5_000), [("vacuum", "public.t")]),     # VACUUM (ANALYZE) covers it
    ("weekly", table(mods=1_051), [("analyze", "public.t")]),               # weekly includes the daily work
    # freeze: 90 % of autovacuum_freeze_max_age 200M = 180M
    ("weekly", table(age=180_000_000), [("vacuum_freeze", "public.t")]),
    ("weekly", table(age=179_999_999), []),
    ("weekly", table(age=199_000_000, dead=9_000), [("vacuum_freeze", "public.t")]),  # FREEZE wins over VACUUM
    # VACUUM FULL: never, unless allow-listed (and bloated past 1 GiB)
    ("weekly", table(bloat=3 * GiB, dead=9_000), [("vacuum", "public.t")]),
    ("weekly", table(bloat=3 * GiB), []),
    ("monthly", table(dead=2_051), [("vacuum", "public.t")]),                # monthly = weekly
    # a never-analyzed table (reltuples -1): thresholds are the bare constants
    ("daily", replace(table(mods=51), reltuples=-1.0), [("analyze", "public.t")]),
])
def test_table_actions(scope, t, expected):
    assert acts(plan(facts([t]), scope, CFG, NOW)) == expected


def test_vacuum_full_only_for_allow_listed_bloated_tables():
    cfg = MaintenanceSettings(vacuum_full_tables=["public.big"])
    p = plan(facts([table("big", bloat=2 * GiB), table("other", bloat=2 * GiB, dead=9_000),
                    table("small", bloat=GiB // 2)]), "weekly", cfg, NOW)
    assert acts(p) == [("vacuum", "public.other"), ("vacuum_full", "public.big")]
    assert p.actions[1].sql == 'VACUUM (FULL, ANALYZE) "public"."big"'


@pytest.mark.parametrize("i, expected", [
    (index(valid=False), [("reindex", "public.t_i")]),
    (index(valid=False, building=True), []),                          # a CREATE INDEX CONCURRENTLY in progress
    (index(bloat=2 * GiB), [("reindex", "public.t_i")]),
    (index(bloat=GiB - 1), []),
    (index(scans=0, size=100 << 20), []),                             # unused: reported, never dropped
])
def test_index_actions(i, expected):
    assert acts(plan(facts([table()], [i]), "weekly", CFG, NOW)) == expected
    assert acts(plan(facts([table()], [i]), "daily", CFG, NOW)) == []   # daily never reindexes


def kinds(p):
    return sorted((f.kind, f.object, f.severity) for f in p.findings)


@pytest.mark.parametrize("extra, expected", [
    (dict(indexes=[index(scans=0)]), [("unused_index", "public.t_i", "info")]),
    (dict(indexes=[index(scans=0, size=1000)]), []),                                         # under the size floor
    (dict(indexes=[index(scans=0, backs=True)]), []),                                        # backs a constraint
    (dict(indexes=[index("a_pkey", backs=True), index("b_dup")]), [("duplicate_index", "public.b_dup", "warning")]),
    (dict(indexes=[index("a"), index("b", definition="CREATE INDEX ON public.t USING btree (b)")]), []),
    (dict(indexes=[index(valid=False)]), [("invalid_index", "public.t_i", "warning")]),
    (dict(indexes=[index(valid=False, building=True)]), []),
    (dict(sequences=[SequenceFact("public", "s", 84.9)]), []),
    (dict(sequences=[SequenceFact("public", "s", 85.0)]), [("sequence", "public.s", "warning")]),
    (dict(sequences=[SequenceFact("public", "s", 96.0)]), [("sequence", "public.s", "critical")]),
    (dict(sessions=[SessionFact(7, "idle in transaction", 130, "app", "api", "UPDATE")]),
     [("idle_in_transaction", "pid:7", "warning")]),
    (dict(sessions=[SessionFact(7, "active", 301, "app", "api", "SELECT")]), [("long_query", "pid:7", "critical")]),
    (dict(sessions=[SessionFact(7, "active", 30, "app", "api", "SELECT")]), []),
    (dict(slots=[SlotFact("standby1", "physical", 2 * GiB)]), [("inactive_slot", "slot:standby1", "warning")]),
    (dict(slots=[SlotFact("standby1", "physical", 10 << 20)]), []),
    (dict(tables=[table(age=195_000_000)]), [("wraparound", "public.t", "critical")]),
    (dict(tables=[table(bloat=6 * GiB)]), [("table_bloat", "public.t", "critical")]),
])
def test_findings(extra, expected):
    assert kinds(plan(facts(**{"tables": [table()], **extra}), "weekly", CFG, NOW)) == sorted(expected)


def test_findings_never_become_actions():
    p = plan(facts([table()], [index("a", scans=0), index("b", scans=0)],
                   [SequenceFact("public", "s", 99.0)], [SessionFact(1, "active", 9999, "u", "", "")],
                   [SlotFact("x", "logical", 9 * GiB)]), "weekly", CFG, NOW)
    assert p.actions == ()
    assert {f.kind for f in p.findings} == {"unused_index", "duplicate_index", "sequence", "long_query",
                                            "inactive_slot"}


@pytest.mark.parametrize("now, start, end, days, inside", [
    (datetime(2030, 3, 3, 3, 0, tzinfo=UTC), time(1), time(6), ["sun"], True),
    (datetime(2030, 3, 3, 6, 0, tzinfo=UTC), time(1), time(6), ["sun"], False),      # end excluded
    (datetime(2030, 3, 3, 1, 0, tzinfo=UTC), time(1), time(6), ["sun"], True),       # start included
    (datetime(2030, 3, 4, 3, 0, tzinfo=UTC), time(1), time(6), ["sun"], False),      # Monday
    (datetime(2030, 3, 3, 12, 0, tzinfo=UTC), time(1), time(6), ["sun"], False),
    (datetime(2030, 3, 3, 1, 30, tzinfo=UTC), time(23), time(2), ["sat"], True),     # wraps: Saturday's window
    (datetime(2030, 3, 3, 1, 30, tzinfo=UTC), time(23), time(2), ["sun"], False),
    (datetime(2030, 3, 3, 23, 30, tzinfo=UTC), time(23), time(2), ["sun"], True),
    (datetime(2030, 3, 3, 12, 0, tzinfo=UTC), time(23), time(2), ["sun"], False),
])
def test_window(now, start, end, days, inside):
    assert in_window(now, start, end, days) is inside


def test_outside_the_window_the_plan_is_kept_but_flagged():
    cfg = MaintenanceSettings(window_start="04:00", window_end="05:00")
    p = plan(facts([table(dead=9_000)]), "weekly", cfg, NOW)
    assert not p.in_window and acts(p) == [("vacuum", "public.t")]
    assert any("outside the maintenance window (04:00-05:00 UTC every day)" in n for n in p.notes)


def test_a_standby_gets_no_actions():
    p = plan(facts([table(dead=9_000)], in_recovery=True), "weekly", CFG, NOW)
    assert p.actions == ()


def test_configurable_thresholds():
    cfg = MaintenanceSettings(vacuum_threshold=0, vacuum_scale_factor=0.01, freeze_warning_percent=50)
    assert acts(plan(facts([table(dead=101)]), "weekly", cfg, NOW)) == [("vacuum", "public.t")]
    assert acts(plan(facts([table(age=100_000_000)]), "weekly", cfg, NOW)) == [("vacuum_freeze", "public.t")]


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="choose one of daily, weekly, monthly"):
        plan(facts(), "hourly", CFG, NOW)


def test_identifiers_are_quoted():
    t = TableFact('we"ird', "Tab le", 10.0, 10, 0, 500, None, None, 1, 0, None, "none")
    (a,) = plan(facts([t]), "daily", CFG, NOW).actions
    assert a.sql == 'ANALYZE "we""ird"."Tab le"'
    assert quote_ident("x") == '"x"'


@pytest.mark.parametrize("bad, message", [
    (dict(window_days=["funday"]), "is not a day"),
    (dict(window_days=[]), "window_days is empty"),
    (dict(window_start="02:00", window_end="02:00"), "would be empty"),
    (dict(vacuum_full_tables=["nodot"]), "must be schema.table"),
    (dict(sequence_warning_percent=96), "sequence_warning_percent is above sequence_critical_percent"),
    (dict(lock_timeout_ms=0), "greater than or equal to 1"),
])
def test_settings_refuse_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        MaintenanceSettings(**bad)
