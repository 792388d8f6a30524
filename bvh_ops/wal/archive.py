"""The WAL archive as a whole: continuity from a base backup to the newest archived segment
(following timeline switches recorded in .history files), how far a recovery can go, and
pruning below the oldest retained base. Names-only checks need one listing and no key;
``hashes=True`` also reads every segment and checks its stored sha256 (and with identities,
decrypts it and checks the plaintext).

A segment is *found* when both its object and its index entry exist (the index entry is
wal-push's commit point); *missing* when a later segment on the same path exists but it does
not; *damaged* when it is present but fails its checksum.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bvh_ops.errors import BvhOpsError, CryptoError, NotFound
from bvh_ops.keys import Identity
from bvh_ops.pg.lsn import HISTORY, parse_segment, segment_name
from bvh_ops.pg.physinfo import PhysicalInfo, oldest_base
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.repo import Repository
from bvh_ops.repository.verify import Status, VerifyResult
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import DecryptingReader, HashingReader, entry_envelopes, plain_hash
from bvh_ops.wal.store import (
    LONG_HEADER,
    WAL_PREFIX,
    entry_digest,
    segment_header_problem,
    split_alternate,
    wal_key,
    wal_object_key,
)

log = logging.getLogger("bvh_ops.wal.archive")


@dataclass(frozen=True)
class ArchivedFile:
    name: str
    has_object: bool
    has_index: bool
    stored_size: int | None  # of the newest object stored for the name
    modified: datetime | None  # ...and when it was stored
    # Every object stored for the name: its plain key and any alternates (an upload that found
    # the plain key taken; the index entry says which one is the file).
    object_keys: tuple[str, ...] = ()


def scan_archive(store: ObjectStore) -> dict[str, ArchivedFile]:
    """One listing of wal/: every file with whether an object and its index entry exist (which
    object the entry names is read from the entry: ``wal_object_key``)."""
    objects: dict[str, list] = {}
    index: set[str] = set()
    for info in store.list(WAL_PREFIX + "/"):
        name = info.key.rsplit("/", 1)[-1]
        if name.endswith(".json"):
            index.add(name[:-5])
        elif not name.startswith("."):
            base, alternate = split_alternate(name)
            objects.setdefault(base, []).append((alternate, info))
    out = {}
    for n in sorted(set(objects) | index):
        found = sorted(objects.get(n, ()), key=lambda a: (a[0], a[1].key))  # the plain key first
        # Size and time of the newest object: an alternate is written after the key it found
        # taken, so a leftover's older time never stands for the upload that was committed.
        newest = max((i for _, i in found), key=lambda i: i.modified, default=None)
        out[n] = ArchivedFile(n, bool(found), n in index, newest.size if newest else None,
                              newest.modified if newest else None, tuple(i.key for _, i in found))
    return out


def _index_entry(store: ObjectStore, name: str) -> dict:
    return json.loads(store.get_bytes(wal_key(name) + ".json"))


def _history(store: ObjectStore, archive: dict[str, ArchivedFile], timeline: int) -> list[tuple[int, int]] | None:
    """[(parent timeline, switch LSN), ...] of ``timeline``, from its index entry."""
    name = f"{timeline:08X}.history"
    if name not in archive or not archive[name].has_index:
        return None
    try:
        text = _index_entry(store, name).get("history")
    except (NotFound, ValueError):
        return None
    if text is None:
        return None
    from bvh_ops.pg.lsn import parse_lsn

    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out.append((int(parts[0]), parse_lsn(parts[1])))
    return out


def timeline_path(store: ObjectStore, archive: dict[str, ArchivedFile], base_tl: int, start_segno: int,
                  seg_size: int) -> list[tuple[int, int, int | None]]:
    """[(timeline, first segno, end segno exclusive or None), ...] from the base to the newest
    timeline that descends from it (what recovery_target_timeline = 'latest' follows)."""
    timelines = sorted({int(n[:8], 16) for n in archive if HISTORY.match(n)}, reverse=True)
    for tl in timelines:
        if tl <= base_tl:
            break
        hist = _history(store, archive, tl)
        if not hist:
            continue
        parents = [p for p, _ in hist]
        if base_tl not in parents:
            continue
        steps = hist[parents.index(base_tl):]
        if start_segno > steps[0][1] // seg_size:
            continue  # the base started after base_tl switched to a sibling: not its descendant
        path = []
        first = start_segno
        for parent, switch in steps:
            end = switch // seg_size
            path.append((parent, first, end))
            first = end
        path.append((tl, first, None))
        return path
    return [(base_tl, start_segno, None)]


@dataclass
class WalReport:
    base_id: str
    start_segment: str
    found: int = 0
    missing: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    last_segment: str | None = None  # newest segment on the path
    contiguous_until: str | None = None  # last segment before the first gap or damage
    end_lsn: int | None = None  # recovery can replay up to here (exclusive)
    end_time: str | None = None  # when PostgreSQL last wrote contiguous_until (approximate newest commit)
    timelines: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.damaged

    def to_json(self) -> dict:
        from bvh_ops.pg.lsn import format_lsn

        return {"base_id": self.base_id, "ok": self.ok, "start_segment": self.start_segment, "found": self.found,
                "missing": self.missing, "damaged": [{"segment": n, "detail": d} for n, d in self.damaged],
                "last_segment": self.last_segment, "contiguous_until": self.contiguous_until,
                "end_lsn": format_lsn(self.end_lsn) if self.end_lsn is not None else None,
                "end_time": self.end_time, "timelines": self.timelines}

    def summary(self) -> str:
        if self.ok:
            return (f"WAL continuous from {self.start_segment} to {self.last_segment or '(nothing archived yet)'} "
                    f"({self.found} segments)")
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {', '.join(self.missing[:5])}{' …' if len(self.missing) > 5 else ''}")
        if self.damaged:
            parts.append("damaged: " + ", ".join(f"{n} ({d})" for n, d in self.damaged[:5]))
        return f"WAL from {self.start_segment}: {'; '.join(parts)}; contiguous until {self.contiguous_until or '-'}"


def _check_segment(store: ObjectStore, name: str, identities, system_identifier: str | None = None) -> str | None:
    """None when the stored segment matches its index entry, else what is wrong. With
    identities: decrypted (bound to its own key), plaintext digest (the entry's sha256 or BLAKE3),
    and its first page must be
    its own position in cluster ``system_identifier`` (a swapped segment fails here)."""
    try:
        entry = _index_entry(store, name)
        key = wal_object_key(name, entry)
        body = store.open_reader(key)
    except (NotFound, ValueError, BvhOpsError) as exc:
        return f"unreadable: {exc}"
    try:
        if entry.get("name") != name:
            return f"its index entry is that of {entry.get('name')!r} (swapped)"
        if system_identifier and entry.get("system_identifier") not in (None, str(system_identifier)):
            return f"its index entry names database system {entry.get('system_identifier')}, not {system_identifier}"
        hashing = HashingReader(body)
        alg, expected = entry_digest(entry)
        plain = plain_hash(alg)
        head = b""
        if identities is not None:
            try:
                reader = DecryptingReader(hashing, identities, bind=key,
                                          envelopes=entry_envelopes(entry))
                while chunk := reader.read(1 << 20):
                    if len(head) < LONG_HEADER:
                        head += chunk[: LONG_HEADER - len(head)]
                    plain.update(chunk)
            except CryptoError as exc:
                return f"does not decrypt: {exc}"
            problem = segment_header_problem(name, head, system_identifier)
            if problem:
                return problem.removeprefix(name + " ")
        hashing.drain()
        # A key rotation rewriting a format-2 file in place records the new object's sha256
        # first ("rewrite"), then swaps the object, then the entry: either is the file.
        pending = (entry.get("rewrite") or {}).get("stored_sha256")
        if hashing.sha.hexdigest() not in (entry.get("stored_sha256"), pending):
            return "stored sha256 differs from its index entry"
        if identities is not None and plain.hexdigest() != expected:
            return f"plaintext {alg} differs from its index entry"
        return None
    except OSError as exc:
        return f"read failed: {exc}"
    finally:
        body.close()


def wal_continuity(store: ObjectStore, base: Manifest, *, until: str | None = None, hashes: bool = False,
                   identities=None, archive: dict[str, ArchivedFile] | None = None) -> WalReport:
    """Every segment from ``base``'s start segment to the newest archived one (or ``until``)."""
    info = PhysicalInfo.of(base)
    seg_size, base_tl, start_segno = info.segment_size, info.timeline, info.start_segno
    archive = archive if archive is not None else scan_archive(store)
    report = WalReport(base.backup_id, info.start_segment)
    path = timeline_path(store, archive, base_tl, start_segno, seg_size)
    report.timelines = [tl for tl, _, _ in path]
    present = {}
    for name, f in archive.items():
        parsed = parse_segment(name, seg_size)
        if parsed:
            present[parsed] = f
    until_key = parse_segment(until, seg_size) if until else None
    expected: list[tuple[int, int]] = []
    for tl, first, end in path:
        if end is None:
            newest = max((s for (t, s) in present if t == tl), default=first - 1)
            if until_key and until_key[0] == tl:
                newest = max(newest, until_key[1])
            end = newest + 1
        expected.extend((tl, s) for s in range(first, end))
    if until_key and until_key in expected:
        expected = expected[: expected.index(until_key) + 1]
    gap_seen = False
    for tl, segno in expected:
        name = segment_name(tl, segno, seg_size)
        f = present.get((tl, segno))
        if f is None or not (f.has_object and f.has_index):
            report.missing.append(name)
            gap_seen = True
            continue
        report.found += 1
        report.last_segment = name
        problem = _check_segment(store, name, identities, base.system_identifier) if hashes else None
        if problem:
            report.damaged.append((name, problem))
            gap_seen = True
            continue
        if not gap_seen:
            report.contiguous_until = name
            report.end_lsn = (segno + 1) * seg_size
    if report.contiguous_until:
        try:
            report.end_time = _index_entry(store, report.contiguous_until).get("modified_at")
        except (NotFound, ValueError):
            pass
        if report.end_time is None:
            f = archive.get(report.contiguous_until)
            report.end_time = f.modified.isoformat() if f and f.modified else None
    return report


def plan_wal_prune(archive_listing: Iterable[str], oldest_base: Manifest) -> list[str]:
    """The archived files older than the oldest retained base's start segment, on its timeline
    and earlier ones: segments and their .backup/.partial files. History files stay (recovery
    reads them to follow later timelines). Pure: names in (scan_archive's keys), names out."""
    info = PhysicalInfo.of(oldest_base)
    seg_size, base_tl, keep_from = info.segment_size, info.timeline, info.start_segno
    doomed = []
    for name in archive_listing:
        parsed = parse_segment(name[:24], seg_size) if not HISTORY.match(name) else None
        if parsed is not None and parsed[0] <= base_tl and parsed[1] < keep_from:
            doomed.append(name)
    return doomed


def delete_wal(store: ObjectStore, archive: dict[str, ArchivedFile], names: list[str]) -> None:
    """Delete planned WAL files. Index entry first (wal-push's commit point), so a half-deleted
    segment reads as absent, never as present; then every object stored for the name."""
    for name in names:
        f = archive[name]
        if f.has_index:
            store.delete(wal_key(name) + ".json")
        for key in f.object_keys:
            store.delete(key)


def prune_wal(store: ObjectStore, oldest_base: Manifest, *, dry_run: bool = False) -> list[str]:
    """Plan the pruning below ``oldest_base`` over one listing of the archive, then (unless
    ``dry_run``) delete what it names. Returns the names."""
    archive = scan_archive(store)
    doomed = plan_wal_prune(archive, oldest_base)
    if doomed and not dry_run:
        delete_wal(store, archive, doomed)
        log.info("pruned %d WAL files older than base %s", len(doomed), oldest_base.backup_id)
    return doomed


def verify_wal(repo: Repository, *, identities: list[Identity] | None = None) -> list[VerifyResult]:
    """WAL continuity from the oldest physical base backup to the newest archived segment:
    one result per missing or damaged segment, plus one summary result. Every segment's stored
    sha256 is checked (and, with identities, its plaintext). No physical backup: no results."""
    from bvh_ops.repository.manifest import PHYSICAL_KINDS

    trusted = []
    for rec in repo.list_backups():
        if rec.status == "complete" and rec.kind in PHYSICAL_KINDS:
            loaded = repo.load_manifest(rec.backup_id)
            if loaded.signature_ok:
                trusted.append(loaded.manifest)
    base = oldest_base(trusted)
    if base is None:
        return []
    try:
        report = wal_continuity(repo.store, base, hashes=True, identities=identities)
    except BvhOpsError as exc:
        return [VerifyResult("wal", "continuity", Status.UNREADABLE, str(exc))]
    results = [VerifyResult("wal", name, Status.MISSING, "segment missing from the archive") for name in report.missing]
    results += [VerifyResult("wal", name, Status.CHECKSUM_MISMATCH, detail) for name, detail in report.damaged]
    summary = f"from base {base.backup_id}: {report.summary()}"
    results.append(VerifyResult("wal", "continuity", Status.OK if report.ok else Status.MISSING, summary))
    return results
