"""Host signing key rotation and key-transition records.

`bvh-ops keys rotate-host` makes a new Ed25519 host key and stores a transition record in the
repository, ``keys/host/<old key id>-<new key id>.json``:

    {"format": "bvh-ops-host-transition-v1",
     "transition": {"old_key_id", "old_public_key", "new_key_id", "new_public_key", "at"},
     "old_signature": b64 Ed25519 signature of canonical(transition) by the old key,
     "new_signature": b64 Ed25519 signature of canonical(transition) by the new key}

A reader that trusts the new key (or any key a chain of records leads to from a trusted key)
also trusts the old one *for verifying*: manifests, file-set indexes and audit digests signed
before the rotation stay verifiable. The old key file is kept, renamed
``host_ed25519.key.retired-<key id>`` (0600): the operator destroys it once replicas and standby
hosts trust the new key (OPERATIONS, Key rotation).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from bvh_ops.errors import ConfigError
from bvh_ops.keys import HOST_KEY_TAG, HostKey, _create_key_file, _line, load_or_create_host_key
from bvh_ops.repository.manifest import canonical
from bvh_ops.repository.transitions import TRANSITION_FORMAT, TRANSITIONS
from bvh_ops.storage.base import ObjectStore

HOST_KEY_FILE = "host_ed25519.key"


def transition_record(old: HostKey, new: HostKey, at: datetime) -> dict:
    body = {"old_key_id": old.key_id, "old_public_key": old.public_b64, "new_key_id": new.key_id,
            "new_public_key": new.public_b64, "at": at.isoformat()}
    return {"format": TRANSITION_FORMAT, "transition": body, "old_signature": old.sign(canonical(body)),
            "new_signature": new.sign(canonical(body))}


def rotate_host_key(state_dir: Path, stores: list[ObjectStore], *, now: datetime | None = None) -> dict:
    """New host key in place of the old one; the transition record stored first, in every
    repository given (the primary and the replica: each is read on its own by restores), so a
    crash or an unreachable repository never leaves a new key without the record that links it
    to the old one."""
    now = now or datetime.now(UTC)
    path = Path(state_dir) / HOST_KEY_FILE
    if not os.path.lexists(path):
        raise ConfigError(f"no host key at {path}: nothing to rotate (one is created on first use)")
    old = load_or_create_host_key(state_dir)
    new = HostKey(ed25519.Ed25519PrivateKey.generate())
    doc = transition_record(old, new, now)
    staged = path.with_name(f"{HOST_KEY_FILE}.new-{new.key_id}")
    retired = path.with_name(f"{HOST_KEY_FILE}.retired-{old.key_id}")
    try:
        _create_key_file(staged, _line(HOST_KEY_TAG, "ed25519", new.private.private_bytes_raw()), 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write {staged}: {exc.strerror}") from None
    try:
        for store in stores:
            store.put_bytes(f"{TRANSITIONS}{old.key_id}-{new.key_id}.json",
                            json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
    except BaseException:
        staged.unlink(missing_ok=True)  # the old key stays in use; a record already written is harmless
        raise
    os.link(path, retired)          # keep the old key (the operator destroys it later)
    os.replace(staged, path)        # atomic: the old key or the new one
    return {"old_key_id": old.key_id, "new_key_id": new.key_id, "new_public_key": new.public_b64,
            "record": f"{TRANSITIONS}{old.key_id}-{new.key_id}.json", "retired_key_file": str(retired),
            "at": now.isoformat()}
