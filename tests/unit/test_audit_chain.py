"""The audit chain's verifier against each tamper (pure: entries built in memory): modify,
delete, insert, reorder, truncate the tail, forge a digest's signature, break the digest chain —
each found, naming the first bad entry."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bvh_ops.audit.chain import (
    GENESIS,
    Entry,
    Problem,
    content_hash,
    link,
    make_digest,
    normalise,
    verify,
)
from bvh_ops.keys import HostKey

KEY = HostKey(ed25519.Ed25519PrivateKey.generate())
TRUSTED = {KEY.key_id: KEY.public_b64}
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def build(n: int, start: int = 1, prev: str = GENESIS) -> list[Entry]:
    out = []
    for seq in range(start, start + n):
        at = T0 + timedelta(minutes=seq)
        data = {"amount": seq * 10, "user": f"u{seq % 7}"}
        h = link(prev, content_hash(seq, at, "ops@host", "wallet.adjust", f"acct-{seq}", data))
        out.append(Entry(seq, at, "ops@host", "wallet.adjust", f"acct-{seq}", data, prev, h))
        prev = h
    return out


def rehash(entries: list[Entry], start_index: int) -> list[Entry]:
    """What a careful attacker does after an edit: recompute every later hash."""
    out = entries[:start_index]
    prev = out[-1].hash if out else GENESIS
    for e in entries[start_index:]:
        h = link(prev, content_hash(e.seq, e.at, e.actor, e.action, e.subject, e.data))
        out.append(dataclasses.replace(e, prev_hash=prev, hash=h))
        prev = h
    return out


def digests_for(entries: list[Entry], at_seqs: list[int]):
    out, prev = [], None
    for s in at_seqs:
        d = make_digest(s, entries[s - 1].hash, s, T0 + timedelta(hours=s), prev, KEY)
        out.append(d)
        prev = d
    return out


CHAIN = build(20)
DIGESTS = digests_for(CHAIN, [5, 10, 20])


def test_an_intact_chain_verifies():
    report = verify(iter(CHAIN), DIGESTS, TRUSTED)
    assert report.ok, [f.line() for f in report.findings]
    assert (report.entries, report.head_seq, report.digests, report.newest_digest) == (20, 20, 3, 20)


def _modified():
    c = list(CHAIN)
    c[6] = dataclasses.replace(c[6], data={"amount": 999999, "user": "u0"})
    return c


def _modified_and_rehashed():
    c = list(CHAIN)
    c[6] = dataclasses.replace(c[6], subject="acct-evil")
    return rehash(c, 6)[:7] + c[7:]  # its own hash recomputed, the next entry's link left


def _deleted():
    return CHAIN[:6] + CHAIN[7:]


def _deleted_and_renumbered():
    rest = [dataclasses.replace(e, seq=e.seq - 1) for e in CHAIN[7:]]
    return CHAIN[:6] + rest


def _inserted():
    forged = build(1, start=7, prev=CHAIN[5].hash)[0]
    forged = dataclasses.replace(forged, subject="acct-ghost")
    forged = dataclasses.replace(forged, hash=link(forged.prev_hash, forged.content))
    return CHAIN[:6] + [forged] + [dataclasses.replace(e, seq=e.seq + 1) for e in CHAIN[6:]]


def _reordered():
    c = list(CHAIN)
    a, b = c[6], c[7]
    c[6] = dataclasses.replace(b, seq=7)
    c[7] = dataclasses.replace(a, seq=8)
    return c


def _truncated():
    return CHAIN[:14]


@pytest.mark.parametrize(("tamper", "problem", "first_bad"), [
    (_modified, Problem.MODIFIED, 7),
    (_modified_and_rehashed, Problem.BROKEN_LINK, 7),
    (_deleted, Problem.MISSING, 7),
    (_deleted_and_renumbered, Problem.REORDERED, 7),
    (_inserted, Problem.INSERTED, 7),
    (_reordered, Problem.REORDERED, 7),
    (_truncated, Problem.TRUNCATED, 15),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_each_tamper_is_found_naming_the_first_bad_entry(tamper, problem, first_bad):
    report = verify(iter(tamper()), DIGESTS, TRUSTED)
    assert not report.ok
    assert report.findings[0].problem is problem, [f.line() for f in report.findings]
    assert report.first_bad == first_bad, [f.line() for f in report.findings]


def test_a_rehashed_rewrite_disagrees_with_the_signed_head():
    c = list(CHAIN)
    c[6] = dataclasses.replace(c[6], subject="acct-evil")
    report = verify(iter(rehash(c, 6)), DIGESTS, TRUSTED)  # every later hash recomputed
    heads = [f for f in report.findings if f.problem is Problem.HEAD_MISMATCH]
    assert [f.seq for f in heads] == [10, 20]
    assert "6..10" in heads[0].detail


def test_a_wholesale_rewrite_with_every_hash_recomputed_is_caught_by_the_digest():
    c = list(CHAIN)
    c[2] = dataclasses.replace(c[2], data={"amount": 1})
    c = rehash(c, 2)
    report = verify(iter(c), DIGESTS, TRUSTED)
    assert [f.problem for f in report.findings] == [Problem.HEAD_MISMATCH] * 3
    assert report.first_bad == 5  # the first signed head after the rewrite
    assert "1..5" in report.findings[0].detail


def test_one_tamper_is_one_finding_not_one_per_later_entry():
    for tamper in (_modified, _deleted, _deleted_and_renumbered, _inserted):
        report = verify(iter(tamper()), [], TRUSTED)
        assert len(report.findings) == 1, (tamper.__name__, [f.line() for f in report.findings])


def test_a_forged_digest_signature_is_found():
    other = HostKey(ed25519.Ed25519PrivateKey.generate())
    forged = dataclasses.replace(DIGESTS[1], signature=other.sign(b"anything"))
    report = verify(iter(CHAIN), [DIGESTS[0], forged, DIGESTS[2]], TRUSTED)
    assert [(f.problem, f.seq) for f in report.findings][0] == (Problem.DIGEST_SIGNATURE, 10)


def test_a_digest_signed_by_an_untrusted_key_is_found():
    other = HostKey(ed25519.Ed25519PrivateKey.generate())
    d = make_digest(20, CHAIN[19].hash, 20, T0, DIGESTS[0], other)
    report = verify(iter(CHAIN), [DIGESTS[0], d], TRUSTED)
    assert report.findings[0].problem is Problem.DIGEST_SIGNATURE and "untrusted" in report.findings[0].detail


def test_a_removed_digest_breaks_the_digest_chain():
    report = verify(iter(CHAIN), [DIGESTS[0], DIGESTS[2]], TRUSTED)
    assert [(f.problem, f.seq) for f in report.findings] == [(Problem.DIGEST_CHAIN, 20)]


def test_a_forged_digest_hiding_a_truncation_does_not_verify():
    short = CHAIN[:14]
    fake = dataclasses.replace(DIGESTS[2], seq=14, head_hash=short[-1].hash, entries=14)
    report = verify(iter(short), [DIGESTS[0], DIGESTS[1], fake], TRUSTED)
    assert report.findings[0].problem is Problem.DIGEST_SIGNATURE


def test_from_seq_checks_only_the_rest():
    report = verify(iter(CHAIN[9:]), DIGESTS, TRUSTED, from_seq=10)
    assert report.ok and report.entries == 11
    bad = _modified()
    assert verify(iter(bad[9:]), DIGESTS, TRUSTED, from_seq=10).ok  # the edit is before --from


@pytest.mark.parametrize(("value", "expected"), [
    ({"b": 1, "a": [1.5, None, True]}, {"b": 1, "a": [1.5, None, True]}),
    ({"big": 1e20}, {"big": 10**20}),
    ({"t": datetime(2026, 1, 1, tzinfo=UTC)}, {"t": "2026-01-01 00:00:00+00:00"}),
    ({"nul": "a\x00b"}, {"nul": "a\ufffdb"}),
    ({"nan": float("nan")}, {"nan": "nan"}),
])
def test_data_is_normalised_to_what_jsonb_gives_back(value, expected):
    assert normalise(value) == expected


def test_naive_times_are_refused():
    with pytest.raises(ValueError):
        content_hash(1, datetime(2026, 1, 1), "a", "b", "", {})


@pytest.mark.parametrize(("period", "start", "end"), [
    ("2026-11", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
    ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ("2024-02", datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),
])
def test_export_periods_are_utc_months(period, start, end):
    from bvh_ops.audit.export import period_bounds

    assert period_bounds(period) == (start, end)


@pytest.mark.parametrize("period", ["2026-13", "2026-1", "11-2026", ""])
def test_a_malformed_period_is_one_config_error(period):
    from bvh_ops.audit.export import period_bounds
    from bvh_ops.errors import ConfigError

    with pytest.raises(ConfigError, match="--period"):
        period_bounds(period)
