"""The standby's lag, the failover verdict and the fence rule: pure, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.standby.lag import failover_verdict, measure_lag
from bvh_ops.wal.fence import fence_key, fence_refusal, parse_fence_key

MB16 = 16 << 20
T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def seg(tl: int, n: int) -> str:
    return f"{tl:08X}{0:08X}{n:08X}"


def times(*names_offsets: tuple[str, int]) -> dict[str, datetime]:
    return {n: T0 + timedelta(seconds=s) for n, s in names_offsets}


@pytest.mark.parametrize("archived, replayed, want", [
    # caught up: the standby replayed the newest archived segment
    ([(seg(1, 3), 0), (seg(1, 4), 60)], seg(1, 4), dict(lag_segments=0, behind_seconds=0.0, caught_up=True, gap=None)),
    # two segments behind, 120 s of data
    ([(seg(1, 3), 0), (seg(1, 4), 60), (seg(1, 5), 120)], seg(1, 3),
     dict(lag_segments=2, lag_bytes=2 * MB16, behind_seconds=120.0, caught_up=False, gap=None)),
    # a gap: segment 5 missing, the standby cannot get past 4
    ([(seg(1, 3), 0), (seg(1, 4), 60), (seg(1, 6), 180)], seg(1, 3),
     dict(lag_segments=3, contiguous_until=seg(1, 4), caught_up=False)),
    # a later timeline at the same position is what it follows
    ([(seg(1, 3), 0), (seg(2, 4), 60)], seg(1, 3), dict(lag_segments=1, archive_newest=seg(2, 4))),
    # earlier timelines do not count
    ([(seg(1, 9), 0), (seg(2, 3), 60)], seg(2, 3), dict(lag_segments=0, archive_newest=seg(2, 3))),
])
def test_measure_lag(archived, replayed, want):
    mod = times(*archived)
    tl = int(replayed[:8], 16)
    lag = measure_lag(replayed=replayed, waiting_for=None, archived=list(mod), timeline=tl, seg_size=MB16,
                      modified=mod, now=T0 + timedelta(seconds=600))
    for k, v in want.items():
        assert getattr(lag, k) == v, k
    if "contiguous_until" in want:
        assert lag.gap and seg(1, 5) in lag.gap


def test_data_age_grows_while_the_source_runs_dry():
    mod = times((seg(1, 3), 0))
    ages = [measure_lag(replayed=seg(1, 3), waiting_for=seg(1, 4), archived=list(mod), timeline=1, seg_size=MB16,
                        modified=mod, now=T0 + timedelta(seconds=s)).data_age_seconds for s in (10, 300, 900)]
    assert ages == [10.0, 300.0, 900.0]


def test_no_progress_yet_is_not_measured():
    mod = times((seg(1, 3), 0))
    lag = measure_lag(replayed=None, waiting_for=None, archived=list(mod), timeline=1, seg_size=MB16, modified=mod,
                      now=T0)
    assert lag.lag_segments is None and not lag.caught_up
    v = failover_verdict(lag, 300, force=False)
    assert not v.allowed and "not replayed any archived segment" in v.reason


@pytest.mark.parametrize("behind, rpo, force, allowed, phrase", [
    (0, 300, False, True, "caught up"),
    (120, 300, False, True, "within the RPO objective 300 s"),
    (812, 300, False, False, "812 s (2 segments, 32 MiB) behind"),
    (812, 300, True, True, "forced: the standby is 812 s"),
])
def test_failover_verdict_names_the_figure(behind, rpo, force, allowed, phrase):
    mod = times((seg(1, 3), 0), (seg(1, 5), behind))
    replayed = seg(1, 5) if behind == 0 else seg(1, 3)
    if behind:
        mod[seg(1, 4)] = T0 + timedelta(seconds=1)
    lag = measure_lag(replayed=replayed, waiting_for=None, archived=list(mod), timeline=1, seg_size=MB16,
                      modified=mod, now=T0 + timedelta(seconds=900))
    v = failover_verdict(lag, rpo, force=force)
    assert v.allowed == allowed and phrase in v.reason
    if not allowed:
        assert "rpo_objective_seconds = 300 s" in v.reason and "--force" in v.reason


def test_a_gap_refuses_failover():
    mod = times((seg(1, 3), 0), (seg(1, 5), 10))
    lag = measure_lag(replayed=seg(1, 3), waiting_for=seg(1, 4), archived=list(mod), timeline=1, seg_size=MB16,
                      modified=mod, now=T0)
    v = failover_verdict(lag, 300, force=False)
    assert not v.allowed and f"segment {seg(1, 4)} is missing" in v.reason


FENCE = {"system_identifier": "7300000000000000001", "timeline": 1, "new_timeline": 2, "switch_lsn": "0/5000000",
         "segment_size": MB16, "fenced_at": "2026-11-28T02:10:00+00:00"}


@pytest.mark.parametrize("name, refused", [
    (seg(1, 4), False),  # before the switch point: archived already, identical re-push is fine
    (seg(1, 5), True),  # starts at the switch point: the old primary's diverging history
    (seg(1, 6), True),
    (seg(1, 5) + ".partial", False),  # the promoted standby's copy of the last old segment
    (seg(1, 5) + ".00000028.backup", True),  # a base backup taken on the old primary afterwards
    ("00000002.history", False),
    (seg(2, 5), False),  # the new timeline
    (seg(3, 9), False),
])
def test_fence_refuses_the_old_timeline_past_the_switch(name, refused):
    problem = fence_refusal(FENCE, name)
    assert (problem is not None) == refused
    if refused:
        assert "fenced" in problem and "0/5000000" in problem and name in problem


def test_fence_mid_segment_switch_refuses_that_segment():
    mid = {**FENCE, "switch_lsn": "0/5800000"}
    assert fence_refusal(mid, seg(1, 5)) is not None and fence_refusal(mid, seg(1, 4)) is None


def test_fence_key_round_trip():
    key = fence_key("7300000000000000001", 10)
    assert key == "fence/7300000000000000001-0000000A.json"
    assert parse_fence_key(key) == ("7300000000000000001", 10)
    assert parse_fence_key("fence/notes.txt") is None


def test_waiting_right_after_the_base_counts_as_caught_up():
    """Nothing archived after the base yet: it asks for the next segment, having replayed the
    base's own WAL; that is caught up, not 'no progress'."""
    mod = times((seg(1, 2), 0))
    lag = measure_lag(replayed=None, waiting_for=seg(1, 3), archived=list(mod), timeline=1, seg_size=MB16,
                      modified=mod, now=T0 + timedelta(seconds=30))
    assert lag.caught_up and lag.lag_segments == 0 and lag.replayed_segment == seg(1, 2)
    assert failover_verdict(lag, 300, force=False).allowed


def test_status_rendering_names_the_figures():
    from bvh_ops.cli.standby import render_status

    mod = times((seg(1, 3), 0), (seg(1, 4), 60), (seg(1, 5), 120))
    lag = measure_lag(replayed=seg(1, 3), waiting_for=None, archived=list(mod), timeline=1, seg_size=MB16,
                      modified=mod, now=T0 + timedelta(seconds=400))
    doc = {"target_dir": "/srv/pg/standby", "state": "standby", "timeline": 1, "port": 5433, "source": "replica",
           "repository": "s3://b/p", "waiting_since": None, "rpo_objective_seconds": 300.0, "within_rpo": True,
           **lag.to_json()}
    text = render_status(doc)
    assert "2 segments, 33554432 bytes, 120 s behind the archive" in text
    assert "newest data 400.0 s old" in text and "RPO objective 300 s: within" in text
