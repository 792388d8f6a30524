"""The drill's early reads match an append_only_tables entry to the table pg_restore reports
loaded (schema, name as stored): a quoted entry is the same table as the checks after the restore
read (bvh_ops.drill.committime), not a name with its quotes still on."""

import pytest

from checks.drill_early import _split


@pytest.mark.parametrize("item, table", [
    ("public.audit_log:occurred_at", ("public", "audit_log")),
    ("audit_log:occurred_at", ("public", "audit_log")),
    ('"Ünïcödé".café:at', ("Ünïcödé", "café")),
    ('public."Events":at', ("public", "Events")),
    ('"a.b".c:at', ("a.b", "c")),
])
def test_an_entry_names_the_table_pg_restore_loads(item, table):
    assert _split(item) == table


def test_a_name_with_three_parts_is_left_to_the_checks_after_the_restore():
    assert _split("a.b.c:at") == ("", "a.b.c:at")  # never a loaded table's (schema, name)
