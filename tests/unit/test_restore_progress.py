"""pg_restore --jobs --verbose read as it runs: a table is handed to the drill's early checks once
its data is committed and no post-data item that locks it exclusively is still to come."""

from __future__ import annotations

from bvh_ops.logical.archive import SECTION_POST_DATA, TocEntry
from bvh_ops.logical.restore import _loaded_lines


def _blocks(*entries: TocEntry) -> dict[int, TocEntry]:
    return {e.dump_id: e for e in entries}


def _entry(dump_id, desc, tag, deps=(), section=SECTION_POST_DATA):
    return TocEntry(dump_id, desc, "public", tag, "", desc == "TABLE DATA", 0, tuple(deps), section)


BLOCKS = _blocks(
    _entry(10, "TABLE", "users", section=2), _entry(11, "TABLE", "tickets", section=2),
    _entry(12, "TABLE", "draws", section=2),
    _entry(20, "TABLE DATA", "users", [10], 3), _entry(21, "TABLE DATA", "tickets", [11], 3),
    _entry(22, "TABLE DATA", "draws", [12], 3),
    _entry(30, "CONSTRAINT", "users users_pkey", [10]),  # ALTER TABLE ADD CONSTRAINT: exclusive
    _entry(31, "INDEX", "tickets_user_idx", [11]),  # CREATE INDEX: readers may stay
    _entry(32, "FK CONSTRAINT", "tickets tickets_user_id_fkey", [11, 10]),
    _entry(33, "POLICY", "draws draws_policy", [12]),
)


def _run(lines: list[str]) -> tuple[list[tuple[str, str]], list[bool]]:
    seen: list[tuple[str, str]] = []
    handle = _loaded_lines(BLOCKS, lambda schema, table: seen.append((schema, table)))
    kept = [handle(f"{ln}\n".encode()) for ln in lines]
    return seen, kept


def test_a_table_is_read_once_its_data_and_exclusive_post_data_items_are_done():
    seen, _ = _run([
        "pg_restore: finished item 21 TABLE DATA tickets",  # only an index and a foreign key follow
        "pg_restore: finished item 20 TABLE DATA users",  # its primary key is still to come
        "pg_restore: finished item 22 TABLE DATA draws",
        "pg_restore: finished item 30 CONSTRAINT users users_pkey",
        "pg_restore: finished item 31 INDEX tickets_user_idx",
    ])
    assert seen == [("public", "tickets"), ("public", "users")]  # draws waits for its policy


def test_an_exclusive_item_done_first_does_not_hold_the_table_back():
    seen, _ = _run(["pg_restore: finished item 33 POLICY draws draws_policy",
                    "pg_restore: finished item 22 TABLE DATA draws",
                    "pg_restore: finished item 22 TABLE DATA draws"])
    assert seen == [("public", "draws")]  # once


def test_progress_lines_are_consumed_and_errors_kept():
    _, consumed = _run(["pg_restore: launching item 20 TABLE DATA users",
                        "pg_restore: error: could not execute query: ERROR:  boom",
                        "pg_restore: warning: errors ignored on restore: 1",
                        "some other line"])
    assert consumed == [True, False, False, False]
