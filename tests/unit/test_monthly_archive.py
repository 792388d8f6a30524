"""Pure parts of the monthly archive: which month a run is for, which WAL makes a physical full
consistent, and the text an operator reads (explain, plan lines, the artifact)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bvh_ops.archive.monthly import archive_month, consistency_wal
from bvh_ops.archive.render import archive_markdown, explain_line, retention_lines
from bvh_ops.pg.lsn import segment_name
from bvh_ops.repository.manifest import Manifest


@pytest.mark.parametrize(("now", "month"), [
    ("2026-12-01T00:00:05", "2026-11"),   # the schedule: the month that just ended
    ("2027-01-01T00:00:00", "2026-12"),   # across the year
    ("2026-11-28T14:00:00", "2026-11"),   # a manual run mid-month: the month so far
])
def test_archive_month(now, month):
    assert archive_month(datetime.fromisoformat(now).replace(tzinfo=UTC)) == month


def full(start: str, stop: str, timeline: int = 1) -> Manifest:
    return Manifest(backup_id="f", kind="full", tool_version="t", started_at="", finished_at="", database="",
                    server_version="18", server_version_num=180000, system_identifier="1", snapshot_id="",
                    dump_format="tar", compression="zstd-3", kem="x", key_ids=(), host="h",
                    extra={"start_lsn": start, "stop_lsn": stop, "timeline": timeline})


def seg(tl: int, n: int) -> str:
    return segment_name(tl, n, 16 << 20)


@pytest.mark.parametrize(("start", "stop", "expected"), [
    ("0/3000028", "0/3000138", [3]),            # one segment
    ("0/3000028", "0/5000000", [3, 4]),          # stop exactly at a boundary: the last byte is in 4
    ("0/3000028", "0/5000001", [3, 4, 5]),
])
def test_consistency_wal_is_start_to_stop_segment(start, stop, expected):
    listing = [seg(1, n) for n in range(1, 8)] + [seg(2, 4), "00000002.history",
                                                   seg(1, 3) + ".00000028.backup"]
    got = consistency_wal(listing, full(start, stop))
    assert [n for n in got if len(n) == 24] == [seg(1, n) for n in expected]
    assert seg(1, 3) + ".00000028.backup" in got and seg(2, 4) not in got


def test_explain_line_names_every_reason():
    d = {"backup_id": "X", "action": "KEEP", "class": "monthly-archive",
         "reasons": ["daily 2026-11-27", "weekly 2026-W48", "parent of Y"]}
    assert explain_line(d) == "X (monthly-archive) is KEPT: daily 2026-11-27; weekly 2026-W48; parent of Y"
    held = {"backup_id": "Z", "action": "HELD", "reasons": ["in no kept bucket", "HELD until 2027-01-01 00:00 UTC"]}
    assert explain_line(held).startswith("Z is due for deletion but HELD: ")


def test_plan_lines_say_dry_run_and_count():
    doc = {"policy": "daily 30", "dry_run": True, "wal_kept_from": None, "wal_pruned": 0,
           "decisions": [{"backup_id": "A", "action": "DELETE", "reasons": ["in no kept bucket"]},
                         {"backup_id": "B", "action": "KEEP", "reasons": ["daily 2026-11-27"]}]}
    lines = retention_lines(doc)
    assert lines[1].startswith("DELETE    A  in no kept bucket")
    assert lines[-1] == "1 kept, 1 to delete (dry run: nothing deleted), 0 held, 0 untrusted"


def test_archive_markdown_never_claims_what_did_not_run():
    md = archive_markdown({"month": "2026-11", "passed": False, "backups": [
        {"backup_id": "L", "kind": "logical", "bytes_stored": 1234, "verify": "FAILED"}],
        "lock": {"detail": "not locked: the archive did not pass verify and drill"}})
    assert "FAILED" in md and "not run" in md and "| `L` | logical | 1.2 KB | – | – | FAILED |" in md
