"""Sliding windows (bvh_ops.logs.analysis.windows): the one-pass best window is the window a
plain reading of the rule gives — every window of ``span`` that contains the new event, counted
afresh — for random streams with ties, late events, repeated keys and the cap."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.logs.analysis.windows import Windows

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def reference(events, at, span, distinct):
    """The rule read plainly: each window [start, start + span] holding ``at``, sliced and
    counted on its own; the first largest wins."""
    best, items = 0, []
    for start in events:
        if not (start[0] <= at <= start[0] + span):
            continue
        window = [e for e in events if start[0] <= e[0] <= start[0] + span and e >= start]
        size = len({e[2] for e in window}) if distinct else len(window)
        if size > best:
            best, items = size, [e[3] for e in window]
    return best, items


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("distinct", [False, True])
def test_the_best_window_is_the_plain_rules(seed, distinct):
    rng = random.Random(seed)
    span = timedelta(seconds=rng.choice([5, 30, 120]))
    w = Windows(span, lateness=timedelta(seconds=20), cap=rng.choice([8, 50, 2000]))
    newest = T0
    for i in range(rng.randint(1, 150)):
        newest += timedelta(seconds=rng.choice([0, 0, 1, 2, 7]))
        at = newest - timedelta(seconds=rng.choice([0, 0, 0, 3, 15]))  # some arrive late
        subject = rng.choice(["ip:a", "ip:b"])
        key = rng.choice(["u1", "u2", "u3", "u4"]) if distinct else None
        got = w.add(subject, at, key, item=i)
        assert got == reference(w._events.get(subject, []), at, span, distinct)


def test_a_long_attack_is_counted_whole_and_its_evidence_is_the_window():
    w = Windows(timedelta(minutes=10), cap=2000)
    for i in range(5000):
        size, items = w.add("ip:attacker", T0 + timedelta(seconds=i), item=i)
    assert size == 601 and items == list(range(4399, 5000))  # the last 10 minutes, both ends in
