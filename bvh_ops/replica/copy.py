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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from bvh_ops.errors import IntegrityError, NotFound
from bvh_ops.replica.plan import COMMIT_NAMES, COPY_NAMES, Plan, Unit, Work, rank
from bvh_ops.storage.base import ObjectStore
from bvh_ops.wal.store import entry_object

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
    elif (len(unit.objects) >= 2 and (index := unit.objects[-1].key).endswith(".json")
          and all(o.key == index[:-5] or o.key.startswith(index[:-5] + "@") for o in unit.objects[:-1])):
        # An object and its index entry (a WAL file's alternate objects too: the entry names one).
        try:
            entry = json.loads(store.get_bytes(index))
            named = entry_object(index[:-5], entry) if isinstance(entry, dict) else None
        except (NotFound, ValueError, IntegrityError):
            entry, named = {}, None
        if named in {o.key for o in unit.objects[:-1]} and entry.get("stored_sha256"):
            out[named] = entry["stored_sha256"]
    return out


@dataclass
class CopyStats:
    objects: int = 0
    bytes: int = 0
    server_side: int = 0


def copy_object(src: ObjectStore, dst: ObjectStore, key: str, size: int, expected: str | None) -> tuple[int, bool]:
    """Copy ``key`` and prove the replica holds the right bytes (IntegrityError otherwise);
    returns (bytes, whether the copy was server-side)."""
    can = getattr(dst, "can_copy_from", None)
    server_side = bool(can is not None and can(src))
    if server_side:
        dst.copy_from(src, key, size)
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
    return n, server_side


@dataclass
class Outcome:
    units: int = 0
    stats: CopyStats = field(default_factory=CopyStats)
    failures: list[tuple[str, str]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)


_UNIT_FAILURE = (IntegrityError, NotFound)  # NotFound: deleted on the primary meanwhile (retention)


def _phases(plan: Plan) -> list[list[Work]]:
    """plan.work cut where the kind changes (it is sorted by kind): WAL, backups, file-set
    content, snapshots, logs, audit, other — each phase done before the next starts."""
    phases: list[list[Work]] = []
    for w in plan.work:
        if not phases or phases[-1][0].unit.kind != w.unit.kind:
            phases.append([])
        phases[-1].append(w)
    return phases


def execute(src: ObjectStore, dst: ObjectStore, plan: Plan, *, workers: int = 1,
            progress: Callable[[Work], None] | None = None) -> Outcome:
    """Carry out ``plan`` phase by phase. In a phase, the data objects of every unit are copied
    by ``workers`` threads; then the commit points (``*.copy``, manifests, index entries) are
    written one unit at a time in order, and only for units whose every object copied and
    verified: an interrupted run never leaves a complete-looking unit. A unit that fails
    verification is reported and skipped; a storage error (a side unreachable) stops the run
    after the work in flight: the next run resumes."""
    out = Outcome()
    content_failed = False
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="replicate") as pool:
        for works in _phases(plan):
            if works[0].unit.kind == "files-snapshot" and content_failed:
                out.deferred += [w.unit.name for w in works]  # its content is not all there
                continue
            failed = _phase(src, dst, works, pool, out)
            content_failed = content_failed or (failed and works[0].unit.kind == "files-content")
            for w in works:
                if w.unit.name not in {f[0] for f in out.failures} and progress is not None:
                    progress(w)
    return out


def _phase(src: ObjectStore, dst: ObjectStore, works: list[Work], pool: ThreadPoolExecutor, out: Outcome) -> bool:
    bad: dict[str, str] = {}
    expected: dict[str, dict[str, str]] = {}
    fatal: list[BaseException] = []

    def record(name: str, fut: Future) -> None:
        try:
            n, server_side = fut.result()
        except _UNIT_FAILURE as exc:
            bad.setdefault(name, str(exc))
            return
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the work in flight
            fatal.append(exc)
            return
        out.stats.objects += 1
        out.stats.bytes += n
        out.stats.server_side += server_side

    for name, fut in [(w.unit.name, pool.submit(expected_hashes, src, w.unit)) for w in works]:
        try:
            expected[name] = fut.result()
        except _UNIT_FAILURE as exc:
            bad[name] = str(exc)
    data = [(w.unit.name, s) for w in works if w.unit.name not in bad for s in w.steps if rank(s.key) == 0]
    futures = [(name, pool.submit(copy_object, src, dst, s.key, s.size, expected[name].get(s.key)))
               for name, s in data]
    for name, fut in futures:
        record(name, fut)
    if fatal:
        raise fatal[0]
    for w in works:                                    # commit points: in order, one unit at a time
        if w.unit.name in bad:
            continue
        for s in (s for s in w.steps if rank(s.key) > 0):
            fut = pool.submit(copy_object, src, dst, s.key, s.size, expected[w.unit.name].get(s.key))
            record(w.unit.name, fut)
            if fatal:
                raise fatal[0]
            if w.unit.name in bad:
                break
        if w.unit.name not in bad:
            out.units += 1
    out.failures += sorted(bad.items())
    return bool(bad)


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
