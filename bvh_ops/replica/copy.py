"""Copy one unit to the replica and verify it there (the impure half of replication).

Each object is copied server-side where the replica's store can (S3 → S3 on one endpoint with
one set of credentials), otherwise streamed in 1 MiB chunks (bounded memory). Then the replica's
bytes are read back and hashed: they must equal the stored sha256 the primary's manifest or
index entry records (or, where nothing records one, the sha256 of the primary's bytes). A
streamed copy whose bytes do not match the primary's record is aborted before it commits, so a
corruption on the primary never replaces a good replica object."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from bvh_ops.errors import IntegrityError, NotFound
from bvh_ops.replica.plan import COMMIT_NAMES, COPY_NAMES, Plan, Unit, Work
from bvh_ops.storage.base import ObjectStore

CHUNK = 1 << 20


def sha256_of(store: ObjectStore, key: str) -> tuple[str, int]:
    """Streamed sha256 and size of one object."""
    h, n = hashlib.sha256(), 0
    body = store.open_reader(key)
    try:
        while chunk := body.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    finally:
        body.close()
    return h.hexdigest(), n


def _manifest_doc(store: ObjectStore, unit: Unit) -> dict | None:
    keys = [o.key for o in unit.objects if o.key.rsplit("/", 1)[-1] in COMMIT_NAMES + COPY_NAMES]
    for key in sorted(keys, key=lambda k: k.endswith(".copy")):  # the main one, else its copy
        try:
            return json.loads(store.get_bytes(key))
        except (NotFound, ValueError):
            continue
    return None


def expected_hashes(store: ObjectStore, unit: Unit) -> dict[str, str]:
    """key -> stored sha256 the primary records for it: a backup's signed manifest (objects and
    the plain backup_manifest), a WAL file's or log archive's index entry. Keys without one are
    checked against the primary's own bytes."""
    out: dict[str, str] = {}
    if unit.kind == "backup":
        doc = _manifest_doc(store, unit)
        m = (doc or {}).get("manifest") or {}
        prefix = unit.name + "/"
        for entry in m.get("objects") or []:
            if entry.get("stored_sha256"):
                out[prefix + entry["name"]] = entry["stored_sha256"]
        bm = (m.get("extra") or {}).get("backup_manifest_sha256")
        if bm:
            out[prefix + "backup_manifest"] = bm
    elif len(unit.objects) == 2 and unit.objects[1].key == unit.objects[0].key + ".json":
        try:
            entry = json.loads(store.get_bytes(unit.objects[1].key))
        except (NotFound, ValueError):
            entry = {}
        if isinstance(entry, dict) and entry.get("stored_sha256"):
            out[unit.objects[0].key] = entry["stored_sha256"]
    return out


@dataclass
class CopyStats:
    objects: int = 0
    bytes: int = 0
    server_side: int = 0


def copy_object(src: ObjectStore, dst: ObjectStore, key: str, size: int, expected: str | None,
                stats: CopyStats) -> None:
    """Copy ``key`` and prove the replica holds the right bytes; IntegrityError otherwise."""
    can = getattr(dst, "can_copy_from", None)
    if can is not None and can(src):
        dst.copy_from(src, key, size)
        stats.server_side += 1
        primary_sha = expected or sha256_of(src, key)[0]
    else:
        h = hashlib.sha256()
        body = src.open_reader(key)
        writer = dst.open_writer(key)
        try:
            while chunk := body.read(CHUNK):
                h.update(chunk)
                writer.write(chunk)
            primary_sha = h.hexdigest()
            if expected and primary_sha != expected:
                raise IntegrityError(f"{key} on the primary does not match the sha256 its manifest or index "
                                     "records (damaged on the primary: run `bvh-ops verify`); not replicated")
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        finally:
            body.close()
    got, n = sha256_of(dst, key)
    want = expected or primary_sha
    if got != want:
        why = ("the primary's copy is damaged too (run `bvh-ops verify`)" if expected and primary_sha != expected
               else "the replica store changed the bytes")
        raise IntegrityError(f"{key}: the replica's copy has sha256 {got[:12]}…, expected {want[:12]}…: {why}")
    stats.objects += 1
    stats.bytes += n


@dataclass
class Outcome:
    units: int = 0
    stats: CopyStats = field(default_factory=CopyStats)
    failures: list[tuple[str, str]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


def execute(src: ObjectStore, dst: ObjectStore, plan: Plan,
            progress: Callable[[Work], None] | None = None) -> Outcome:
    """Carry out ``plan`` unit by unit, each in commit order. A unit whose object fails
    verification stops there (its manifest or index entry is never written) and the run goes on;
    a storage error (replica or primary unreachable) stops the run: the next one resumes."""
    out = Outcome()
    content_failed = False
    for work in plan.work:
        unit = work.unit
        if unit.kind == "files-snapshot" and content_failed:
            out.deferred.append(unit.name)  # its content is not all there: never commit it first
            continue
        try:
            expected = expected_hashes(src, unit)
            for step in work.steps:
                copy_object(src, dst, step.key, step.size, expected.get(step.key), out.stats)
        except (IntegrityError, NotFound) as exc:
            # NotFound: deleted on the primary meanwhile (retention); the next plan drops it.
            out.failures.append((unit.name, str(exc)))
            content_failed = content_failed or unit.kind == "files-content"
            continue
        out.units += 1
        if progress is not None:
            progress(work)
    return out


def find_corrupt(src: ObjectStore, dst: ObjectStore, units: list[Unit], replica_sizes: dict[str, int]) -> list[str]:
    """The verify pass: every replica object of a committed unit is hashed and compared with
    the primary's record (or the primary's bytes); returns the keys whose bytes differ."""
    bad = []
    for unit in units:
        present = [o for o in unit.objects if o.key in replica_sizes]
        if not present:
            continue
        expected = expected_hashes(src, unit)
        for o in present:
            if replica_sizes[o.key] != o.size:
                continue  # the plan re-copies it anyway
            try:
                want = expected.get(o.key) or sha256_of(src, o.key)[0]
                if sha256_of(dst, o.key)[0] != want:
                    bad.append(o.key)
            except NotFound:
                continue  # deleted on either side meanwhile: the next plan sees it
    return bad
