"""The key-rotation planner (pure) and host key transition records: table-driven, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from bvh_ops.errors import ConfigError
from bvh_ops.keys import HostKey
from bvh_ops.repository.transitions import check_record, extend_trust
from bvh_ops.rotation.host import transition_record
from bvh_ops.rotation.plan import Item, check_request, plan_rotation

A, B, C = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"


def item(kind="backup", ref="x", version=3, keys=(A,), pending=False, rewritable=True) -> Item:
    return Item(kind, ref, version, tuple(keys), pending, rewritable)


@pytest.mark.parametrize("it, target, action", [
    (item(version=3, keys=(A,)), (B,), "rewrap"),
    (item(version=3, keys=(B,)), (B,), "skip"),                 # a re-run skips what was done
    (item(version=3, keys=(B, A)), (A, B), "skip"),             # order does not matter
    (item(version=3, keys=(A,)), (A, B), "rewrap"),             # adding a key
    (item(version=2, keys=(A,)), (B,), "rewrite"),              # format 2: envelopes in the header
    (item(version=2, keys=(B,)), (B,), "skip"),                 # already right: not rewritten for nothing
    (item(kind="wal", version=2, keys=(A,), pending=True), (B,), "rewrite"),   # finish an interrupted one
    (item(kind="wal", version=3, keys=(B,), pending=True), (B,), "rewrite"),
    (item(kind="files", version=2, keys=(A,), rewritable=False), (B,), "left"),
])
def test_plan_step(it, target, action):
    (step,) = plan_rotation([it], target).steps
    assert step.action == action


def test_plan_counts_by_kind():
    plan = plan_rotation([item("backup", "1"), item("backup", "2", 2), item("wal", "w"), item("log", "l", keys=(B,))],
                         (B,))
    assert dict(plan.count("rewrap")) == {"backup": 1, "wal": 1}
    assert dict(plan.count("rewrite")) == {"backup": 1}
    assert [s.item.ref for s in plan.work] == ["1", "2", "w"]


@pytest.mark.parametrize("current, added, removed, configured, match", [
    ((A,), (), (A,), (A,), "last recipient"),
    ((A,), (B,), (A,), (A,), "still in the configured recipients"),
    ((B,), (), (C,), (B,), "no backup, WAL file"),
])
def test_refused_requests(current, added, removed, configured, match):
    with pytest.raises(ConfigError, match=match):
        check_request(current, added, removed, configured, [item(keys=(A, B))])


def test_target_is_configured_plus_added_minus_removed():
    assert check_request((B,), (C,), (A,), (B,), [item(keys=(A,))]) == (B, C)


def _key() -> HostKey:
    return HostKey(ed25519.Ed25519PrivateKey.generate())


def test_transition_chain_trusts_retired_keys_from_a_trusted_one():
    k1, k2, k3 = _key(), _key(), _key()
    at = datetime(2026, 11, 28, tzinfo=UTC)
    r12, r23 = transition_record(k1, k2, at), transition_record(k2, k3, at)
    bodies = [check_record(r12), check_record(r23)]
    assert all(bodies)
    trusted = extend_trust({k3.key_id: k3.public_b64}, bodies)
    assert set(trusted) == {k1.key_id, k2.key_id, k3.key_id}
    # Trust flows from new to old only: trusting k1 does not make k3 trusted.
    assert set(extend_trust({k1.key_id: k1.public_b64}, bodies)) == {k1.key_id}


def test_a_transition_without_both_signatures_is_ignored():
    k1, k2, forger = _key(), _key(), _key()
    rec = transition_record(k1, k2, datetime(2026, 11, 28, tzinfo=UTC))
    forged = dict(rec, old_signature=forger.sign(b"x"))
    assert check_record(forged) is None
    # An attacker's own key claimed as the retired one: the old signature cannot be made.
    bad = transition_record(forger, k2, datetime(2026, 11, 28, tzinfo=UTC))
    bad["transition"]["old_key_id"] = k1.key_id
    assert check_record(bad) is None


def test_an_untrusted_backup_is_left_with_its_reason():
    it = item(version=3, keys=(A,), rewritable=False)
    it = Item(it.kind, it.ref, 3, (A,), rewritable=False, note="manifest signed by untrusted host key x")
    (step,) = plan_rotation([it], (B,)).steps
    assert (step.action, step.reason) == ("left", "manifest signed by untrusted host key x")
