"""Fencing an old primary out of the repository after a failover.

A failover writes ``fence/<system_identifier>-<timeline>.json`` (timeline as 8 hex digits, like
WAL names): the old timeline of that cluster ended at ``switch_lsn``, where the promoted standby
began its new timeline. From then on `bvh-ops-wal push` refuses any WAL file of the old timeline
that holds WAL past the switch point: an old primary that comes back (or never died) cannot
continue a diverging history into the repository; its archiver fails, PostgreSQL keeps the WAL
in its pg_wal, and its log names the fence. Files up to the switch point were archived already
(an identical re-push is still "already archived"); a promoted standby's ``.partial`` file of
the old timeline is its own, not the old primary's, and passes.

The record is signed with the failing-over host's key (who fenced, when, why); push honours a
fence whatever its signature (refusing to archive is the safe side: nothing is lost, the WAL
waits on the old host), and `bvh-ops failover` shows whether the signature is trusted.
"""

from __future__ import annotations

import json
import re

from bvh_ops.errors import IntegrityError, NotFound
from bvh_ops.pg.lsn import parse_lsn

FENCE_PREFIX = "fence/"
FENCE_FORMAT = "bvh-ops-fence-1"
_FENCE_KEY = re.compile(r"^fence/(\d+)-([0-9A-F]{8})\.json$")


class Fenced(IntegrityError):
    """The WAL file belongs to a timeline a failover fenced off (exit code 8)."""


def fence_key(system_identifier: str, timeline: int) -> str:
    return f"{FENCE_PREFIX}{system_identifier}-{timeline:08X}.json"


def parse_fence_key(key: str) -> tuple[str, int] | None:
    m = _FENCE_KEY.match(key)
    return (m.group(1), int(m.group(2), 16)) if m else None


def fence_refusal(record: dict, name: str) -> str | None:
    """Why the fence ``record`` refuses WAL file ``name`` (None: it does not). Pure.
    Refused: a segment or ``.backup`` file of the fenced timeline whose segment reaches past
    the switch point. Passed: other timelines, ``.history`` files, ``.partial`` files (the
    promoted standby's copy of the old timeline's last segment), segments before the switch."""
    if name.endswith((".history", ".partial")) or len(name) < 24:
        return None
    timeline = int(name[:8], 16)
    if timeline != int(record["timeline"]):
        return None
    seg_size = int(record["segment_size"])
    segno = int(name[8:16], 16) * (0x100000000 // seg_size) + int(name[16:24], 16)
    switch = parse_lsn(record["switch_lsn"])
    if (segno + 1) * seg_size <= switch:
        return None
    return (f"timeline {timeline} of database system {record['system_identifier']} was fenced at "
            f"{record['fenced_at']} by a failover to timeline {record['new_timeline']} at {record['switch_lsn']}: "
            f"refusing to archive {name} (this is the old primary: stop it, see docs/OPERATIONS.md "
            "'Failover at 02:00', fence the old primary)")


class FenceView:
    """The ``fence/`` prefix of a repository as listed once (a LIST request on S3), with the
    records read on demand: one view serves several WAL files. The long-lived pusher
    (bvh_ops.wal.pusher) lists again when its view is older than FENCE_RECHECK_SECONDS, so a
    fence written after a listing stops an old primary's pushes within that time; a one-off
    push lists for its one file (check_fence)."""

    def __init__(self, store) -> None:
        self._store = store
        self._keys = [info.key for info in store.list(FENCE_PREFIX)]
        self._records: dict[str, dict | None] = {}

    def check(self, name: str, system_identifier: str | None) -> None:
        """Raise Fenced when a fence refuses ``name`` (of cluster ``system_identifier``, or of any
        cluster when the file carries no header, e.g. a ``.backup`` file)."""
        if name.endswith((".history", ".partial")):
            return
        timeline = int(name[:8], 16)
        for key in self._keys:
            parsed = parse_fence_key(key)
            if parsed is None or parsed[1] != timeline:
                continue
            if system_identifier is not None and parsed[0] != str(system_identifier):
                continue
            record = self._record(key, name)
            if record is None:
                continue
            problem = fence_refusal(record, name)
            if problem:
                raise Fenced(problem)

    def _record(self, key: str, name: str) -> dict | None:
        if key not in self._records:
            try:
                self._records[key] = json.loads(self._store.get_bytes(key))["fence"]
            except NotFound:
                self._records[key] = None
            except (ValueError, KeyError, TypeError):
                raise Fenced(f"fence record {key} is unreadable: refusing to archive {name} until an operator "
                             "looks at it") from None
        return self._records[key]


FENCE_RECHECK_SECONDS = 1.0


def check_fence(store, name: str, system_identifier: str | None) -> None:
    """Raise Fenced when a fence in ``store`` refuses ``name`` (of cluster ``system_identifier``,
    or of any cluster when the file carries no header, e.g. a ``.backup`` file). One listing of
    the (small) ``fence/`` prefix; no fence: nothing else is read."""
    FenceView(store).check(name, system_identifier)
