"""Verify returns results; it never raises for a bad object and never stops at the first one.

Shallow: manifest signature, every object's presence, stored size and stored sha256 (no keys).
Deep: also decrypts, decompresses and checks the plaintext sha256 (needs the identity).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from bvh_ops import progress
from bvh_ops.errors import BvhOpsError, CryptoError, IntegrityError, NotFound
from bvh_ops.keys import Identity
from bvh_ops.repository.manifest import parse_manifest
from bvh_ops.repository.repo import MANIFEST, MANIFEST_COPY, Repository, backup_prefix
from bvh_ops.stream import DecryptingReader, HashingReader, envelopes_from_json, plain_hash

CHUNK = 1 << 20


class Status(enum.StrEnum):
    OK = "OK"
    MISSING = "MISSING"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    UNREADABLE = "UNREADABLE"
    BAD_SIGNATURE = "BAD_SIGNATURE"


@dataclass(frozen=True)
class VerifyResult:
    backup_id: str
    object: str
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_json(self) -> dict[str, str]:
        return {"backup_id": self.backup_id, "object": f"{self.backup_id}/{self.object}",
                "status": str(self.status), "detail": self.detail}


def verify_backup(repo: Repository, backup_id: str, *, identities: list[Identity] | None = None,
                  keep: dict[str, Any] | None = None) -> list[VerifyResult]:
    """One result per manifest file and per object. ``identities`` given = deep verify.
    ``keep``: object name -> a sink (``write(bytes)``, ``commit()``, ``abort()``) that receives
    that object's plaintext as a deep verify decrypts it, committed only when the object
    verified OK (a drill keeps the dump it restores from: one decryption instead of two)."""
    prefix = backup_prefix(backup_id)
    results: list[VerifyResult] = []
    loaded = None
    raws = {}
    for name in (MANIFEST, MANIFEST_COPY):
        try:
            raws[name] = repo.store.get_bytes(prefix + name)
        except NotFound:
            results.append(VerifyResult(backup_id, name, Status.MISSING, "manifest file missing"))
        except BvhOpsError as exc:
            results.append(VerifyResult(backup_id, name, Status.UNREADABLE, str(exc)))
    for name, raw in raws.items():
        try:
            parsed = parse_manifest(raw, repo.trusted_keys, expect_id=backup_id)
        except BvhOpsError as exc:
            results.append(VerifyResult(backup_id, name, Status.UNREADABLE, str(exc)))
            continue
        if parsed.signature_ok:
            results.append(VerifyResult(backup_id, name, Status.OK, parsed.signature_detail))
            loaded = loaded or parsed
        else:
            results.append(VerifyResult(backup_id, name, Status.BAD_SIGNATURE, parsed.signature_detail))
    if loaded is None:
        # Without a trusted manifest the object list itself cannot be trusted.
        _abort_unused(keep, ())
        return results
    _abort_unused(keep, [e.name for e in loaded.manifest.objects] if identities is not None else ())
    for entry in loaded.manifest.objects:
        sink = (keep or {}).get(entry.name) if identities is not None else None
        try:
            result = _verify_object(repo, backup_id, prefix, entry, identities, sink)
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        if sink is not None and result.ok:
            sink.commit()
        elif sink is not None:
            sink.abort()
        results.append(result)
    return results


def _abort_unused(keep: dict[str, Any] | None, verified) -> None:
    """The sinks of objects that will not be decrypted here aborted now (their scratch files gone)."""
    for name, sink in (keep or {}).items():
        if name not in verified:
            sink.abort()


def _verify_object(repo, backup_id, prefix, entry, identities, sink=None) -> VerifyResult:
    key = prefix + entry.stored
    try:
        info = repo.store.stat(key)
    except BvhOpsError as exc:
        return VerifyResult(backup_id, entry.name, Status.UNREADABLE, str(exc))
    if info is None:
        return VerifyResult(backup_id, entry.name, Status.MISSING, "object not in the repository")
    if info.size != entry.stored_size:
        return VerifyResult(
            backup_id, entry.name, Status.SIZE_MISMATCH, f"stored {info.size} bytes, manifest says {entry.stored_size}"
        )
    try:
        body = repo.store.open_reader(key)
    except BvhOpsError as exc:
        return VerifyResult(backup_id, entry.name, Status.UNREADABLE, str(exc))
    try:
        hashing = HashingReader(body)
        deep_detail = ""
        if identities is not None:
            alg, expected = entry.plaintext_digest
            plain_sha = plain_hash(alg)
            plain_size = 0
            try:
                reader = DecryptingReader(hashing, identities, bind=key,
                                          envelopes=envelopes_from_json(entry.envelopes))
                while chunk := reader.read(CHUNK):
                    plain_sha.update(chunk)
                    plain_size += len(chunk)
                    if sink is not None:
                        sink.write(chunk)
                    progress.report(f"verify {entry.name}", plain_size, entry.plaintext_size)
                deep_error = None
            except CryptoError as exc:
                deep_error = str(exc)
            hashing.drain()
        else:
            hashing.drain()
            deep_error = None
        if hashing.sha.hexdigest() != entry.stored_sha256:
            return VerifyResult(backup_id, entry.name, Status.CHECKSUM_MISMATCH, "stored sha256 differs from the manifest")
        if identities is not None:
            if deep_error is not None:
                return VerifyResult(backup_id, entry.name, Status.UNREADABLE, deep_error)
            if plain_sha.hexdigest() != expected or plain_size != entry.plaintext_size:
                return VerifyResult(backup_id, entry.name, Status.CHECKSUM_MISMATCH, f"plaintext {alg} differs")
            deep_detail = f"; decrypted {plain_size} bytes, plaintext {alg} matches"
        return VerifyResult(backup_id, entry.name, Status.OK, f"{info.size} bytes, sha256 matches{deep_detail}")
    except BvhOpsError as exc:
        return VerifyResult(backup_id, entry.name, Status.UNREADABLE, str(exc))
    except OSError as exc:
        return VerifyResult(backup_id, entry.name, Status.UNREADABLE, f"read failed: {exc}")
    finally:
        body.close()


PREFLIGHT_HASH_BYTES = 256 << 20  # objects up to this size are hashed in full before a restore uses them


def preflight(repo: Repository, backup_id: str, entry, *, hash_limit: int | None = None) -> None:
    """What can be checked cheaply before any byte of an object reaches a restore target: its
    stored size against the signed manifest and, for objects up to ``hash_limit`` bytes, its
    stored sha256 (larger ones are authenticated segment by segment as they stream, and their
    sha256 is checked at the end). Raises IntegrityError naming the backup and the object."""
    key = backup_prefix(backup_id) + entry.stored
    info = repo.store.stat(key)
    if info is None:
        raise NotFound(f"backup {backup_id}: object {entry.name} is missing from the repository")
    if info.size != entry.stored_size:
        raise IntegrityError(f"backup {backup_id}: object {entry.name} is {info.size} bytes, its manifest says "
                             f"{entry.stored_size} (damaged or replaced): nothing was restored")
    if info.size > (PREFLIGHT_HASH_BYTES if hash_limit is None else hash_limit):
        return
    body = repo.store.open_reader(key)
    try:
        hashing = HashingReader(body)
        hashing.drain(CHUNK)
    finally:
        body.close()
    if hashing.sha.hexdigest() != entry.stored_sha256:
        raise IntegrityError(f"backup {backup_id}: object {entry.name}'s sha256 differs from its manifest "
                             "(damaged or replaced): nothing was restored")


def render(results: list[VerifyResult]) -> str:
    width = max((len(r.backup_id) + len(r.object) + 1 for r in results), default=10)
    lines = [f"{(r.backup_id + '/' + r.object).ljust(width)}  {str(r.status):18}  {r.detail}" for r in results]
    bad = sum(not r.ok for r in results)
    lines.append(f"{len(results)} objects checked, {bad} bad")
    return "\n".join(lines)


def check_identities_open(repo: Repository, backup_id: str, identities: list[Identity]) -> None:
    """Raise CryptoError (exit 7) when none of ``identities`` is a recipient of the backup's
    objects: a deep verify with the wrong key would report every object unreadable, and alerting
    would hear of corruption the data does not have. Objects that carry their envelopes in their
    own header (format 2) are not known here: then the verify itself says what it finds."""
    try:
        manifest = repo.trusted_manifest(backup_id)
    except BvhOpsError:
        return  # the verify reports an unreadable or untrusted manifest itself
    recipients = {env.key_id for o in manifest.objects for env in envelopes_from_json(list(o.envelopes))}
    if recipients and recipients.isdisjoint(i.key_id for i in identities):
        raise CryptoError(f"the identity given is not one backup {backup_id} was sealed to (key ids "
                          f"{', '.join(sorted(recipients))}): set BVH_OPS_IDENTITY to the right key")


def unopened(repo: Repository, backup_ids: list[str], identities: list[Identity]) -> dict[str, CryptoError]:
    """The backups among ``backup_ids`` none of ``identities`` is a recipient of
    (check_identities_open), each with the error that says so, in the order given."""
    out: dict[str, CryptoError] = {}
    for bid in backup_ids:
        try:
            check_identities_open(repo, bid, identities)
        except CryptoError as exc:
            out[bid] = exc
    return out
