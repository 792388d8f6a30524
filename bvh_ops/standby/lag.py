"""A standby's replay lag and the failover verdict: pure functions over segment names and
timestamps, ``now`` passed in.

What the standby has replayed is known at segment granularity from wal-fetch (the newest
segment it delivered; the one it asks for and the archive does not have yet). Each archived
segment's time is when the primary last wrote it (its index entry's ``modified_at``), so the
difference between the newest archived segment's time and the replayed one's is how much
newer data the archive holds than the standby: what a failover now would lose beyond what the
archive itself has not received.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime

from bvh_ops.pg.lsn import SEGMENT, parse_segment, segment_name


@dataclass(frozen=True)
class Lag:
    replayed_segment: str | None  # newest segment delivered to the standby
    replayed_at: datetime | None  # when the primary last wrote it (the newest data it can hold)
    waiting_for: str | None  # the segment the standby asks for that is not archived yet
    archive_newest: str | None  # newest archived segment on the standby's timeline or later
    archive_newest_at: datetime | None
    contiguous_until: str | None  # the standby can replay up to here (no gap after its position)
    lag_segments: int | None
    lag_bytes: int | None
    behind_seconds: float | None  # archive_newest_at - replayed_at (0 when caught up)
    data_age_seconds: float | None  # now - replayed_at: grows while the WAL source runs dry
    caught_up: bool
    gap: str | None  # a missing segment the standby cannot get past

    def to_json(self) -> dict:
        doc = asdict(self)
        for k in ("replayed_at", "archive_newest_at"):
            doc[k] = doc[k].isoformat() if doc[k] else None
        for k in ("behind_seconds", "data_age_seconds"):
            doc[k] = round(doc[k], 1) if doc[k] is not None else None
        return doc


def measure_lag(*, replayed: str | None, waiting_for: str | None, archived: Iterable[str], timeline: int,
                seg_size: int, modified: Mapping[str, datetime], now: datetime) -> Lag:
    """The lag of a standby on ``timeline`` that has replayed through segment ``replayed``,
    against the archived segment names ``archived`` (their times in ``modified``, by name)."""
    if waiting_for and SEGMENT.match(waiting_for):
        # Asking for segment N means it has replayed through N - 1 (from the archive, or from the
        # base backup's own pg_wal when nothing after the base has been archived yet).
        wtl, wseg = parse_segment(waiting_for, seg_size)
        if wseg > 0 and (replayed is None or wseg - 1 > parse_segment(replayed, seg_size)[1]):
            replayed = segment_name(wtl, wseg - 1, seg_size)
    position: dict[int, str] = {}
    for name in archived:
        if not SEGMENT.match(name):
            continue
        tl, segno = parse_segment(name, seg_size)
        if tl >= timeline and (segno not in position or name > position[segno]):
            position[segno] = name  # the newest timeline at each position (what 'latest' follows)
    newest_segno = max(position, default=None)
    newest = position[newest_segno] if newest_segno is not None else None
    newest_at = modified.get(newest) if newest else None
    replayed_at = modified.get(replayed) if replayed else None
    if replayed is None or newest_segno is None:
        return Lag(replayed, replayed_at, waiting_for, newest, newest_at, None, None, None, None,
                   _age(now, replayed_at), False, None)
    rseg = parse_segment(replayed, seg_size)[1]
    segno = rseg
    while segno + 1 in position:
        segno += 1
    contiguous = position.get(segno, replayed)
    gap = None
    if segno < newest_segno:
        gap = (f"segment {segment_name(timeline, segno + 1, seg_size)} is missing from the archive: the standby "
               f"cannot replay past {contiguous}")
    lag_segments = max(0, newest_segno - rseg)
    behind = max(0.0, (newest_at - replayed_at).total_seconds()) if newest_at and replayed_at else None
    if lag_segments == 0:
        behind = 0.0
    return Lag(replayed, replayed_at, waiting_for, newest, newest_at, contiguous, lag_segments,
               lag_segments * seg_size, behind, _age(now, replayed_at), lag_segments == 0, gap)


def _age(now: datetime, at: datetime | None) -> float | None:
    return max(0.0, (now - at).total_seconds()) if at else None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def failover_verdict(lag: Lag, rpo_objective_seconds: float, *, force: bool) -> Verdict:
    """May the standby be promoted now? Refused (unless ``force``) when its lag cannot be
    measured, when a gap stops it short of the archive, or when it is more than the RPO
    objective behind the newest archived WAL; the reason names the figure."""
    problem = None
    if lag.replayed_segment is None:
        problem = "the standby has not replayed any archived segment yet (no progress recorded by wal-fetch)"
    elif lag.gap:
        problem = lag.gap
    elif lag.behind_seconds is None:
        problem = "the standby's lag could not be measured (archived segments without a time)"
    elif lag.behind_seconds > rpo_objective_seconds:
        problem = (f"the standby is {lag.behind_seconds:.0f} s ({lag.lag_segments} segments, "
                   f"{_mib(lag.lag_bytes)}) behind the newest archived WAL {lag.archive_newest}, more than "
                   f"rpo_objective_seconds = {rpo_objective_seconds:.0f} s")
    if problem is None:
        state = "caught up with the archive" if lag.caught_up else (
            f"{lag.lag_segments} segments ({lag.behind_seconds:.0f} s) behind the archive, within the RPO objective "
            f"{rpo_objective_seconds:.0f} s")
        return Verdict(True, state)
    if force:
        return Verdict(True, f"forced: {problem}")
    return Verdict(False, f"{problem}: refusing to fail over; wait for it to catch up (bvh-ops standby status) "
                          "or pass --force to accept the data loss")


def _mib(n: int | None) -> str:
    return f"{(n or 0) / (1 << 20):.0f} MiB"
