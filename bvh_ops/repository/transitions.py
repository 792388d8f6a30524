"""Host key transitions: records in ``keys/host/`` that link a retired host signing key to its
successor, signed by both (written by `bvh-ops keys rotate-host`, see docs/FORMAT.md). A key a
chain of valid records leads to from a trusted key is trusted for verifying signatures."""

from __future__ import annotations

import json

from bvh_ops.errors import BvhOpsError
from bvh_ops.keys import host_key_id, verify_signature
from bvh_ops.repository.manifest import canonical
from bvh_ops.storage.base import ObjectStore

TRANSITIONS = "keys/host/"
TRANSITION_FORMAT = "bvh-ops-host-transition-v1"


def check_record(doc: dict) -> dict | None:
    """The transition body when both signatures hold and the ids match the keys; else None."""
    try:
        if doc.get("format") != TRANSITION_FORMAT:
            return None
        body = doc["transition"]
        data = canonical(body)
        if host_key_id(body["old_public_key"]) != body["old_key_id"] or \
                host_key_id(body["new_public_key"]) != body["new_key_id"]:
            return None
        if verify_signature(body["old_public_key"], doc["old_signature"], data) and \
                verify_signature(body["new_public_key"], doc["new_signature"], data):
            return body
    except (KeyError, TypeError, ValueError):
        return None
    return None


def load_transitions(store: ObjectStore) -> list[dict]:
    out = []
    try:
        for info in store.list(TRANSITIONS):
            if info.key.endswith(".json"):
                try:
                    body = check_record(json.loads(store.get_bytes(info.key)))
                except (BvhOpsError, ValueError):
                    body = None
                if body is not None:
                    out.append(body)
    except BvhOpsError:
        pass  # no record readable: the configured keys alone
    return out


def extend_trust(trusted: dict[str, str], transitions: list[dict]) -> dict[str, str]:
    """Follow the chain: a record whose *new* key is trusted makes its *old* key trusted, until
    nothing changes (so A -> B -> C with C trusted trusts B and A)."""
    trusted = dict(trusted)
    changed = True
    while changed:
        changed = False
        for t in transitions:
            if t["new_key_id"] in trusted and t["old_key_id"] not in trusted:
                trusted[t["old_key_id"]] = t["old_public_key"]
                changed = True
    return trusted


