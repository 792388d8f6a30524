"""What replication must copy, in which order, and how far the replica lags (pure: listings in,
plan out, ``now`` passed in).

The primary's listing is grouped into *units*, each copied in the primary's own commit order so
an interrupted replication never leaves a replica unit that looks complete but is not:

    wal/<tl>/<name>                 the object, then its ``.json`` index entry (the commit point)
    backups/<id>/...                every object, then manifest.json.copy, then manifest.json LAST
    logs/.../<archive>              the archive, then its ``.json`` index entry
    files/content/, files/keys/     content before any snapshot that refers to it
    files/snapshots/<id>/...        entries and refs, then snapshot.json.copy, then snapshot.json
    audit/digests/<seq>.json        one object each
    anything else (e.g. archive/)   the same rules by directory: data, then ``*.copy``, then the
                                    manifest/index; a directory still holding inprogress.json
                                    without any manifest is skipped

Only committed units are replicated (a backup without a manifest does not exist for readers).
A key needs copying when the replica lacks it, its size differs, or the primary's copy is newer
than the replica's (rewritten in place, e.g. by key rotation) or the verify pass found it
corrupt. Deletions are never planned: see docs/OPERATIONS.md "Two-region set-up".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bvh_ops.wal.store import split_alternate

MARKER = "inprogress.json"
COMMIT_NAMES = ("manifest.json", "snapshot.json")
COPY_NAMES = tuple(n + ".copy" for n in COMMIT_NAMES)
SKIP_NAMES = (MARKER, "gc.lock")
# Copy order between units: WAL first (the RPO rides on it), then backups, then the rest;
# file-set content before the snapshots that name it.
KIND_ORDER = {"wal": 0, "backup": 1, "files-content": 2, "files-snapshot": 3, "log": 4, "audit": 5, "other": 6}


@dataclass(frozen=True)
class Obj:
    """One object of a listing (key relative to the repository root)."""

    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class Step:
    key: str
    size: int
    modified: datetime   # the primary's
    reason: str          # missing | size | rewritten | corrupt


@dataclass(frozen=True)
class Unit:
    """Objects that commit together, in copy order (commit point last)."""

    kind: str
    name: str
    objects: tuple[Obj, ...]

    @property
    def committed_at(self) -> datetime:
        return self.objects[-1].modified


@dataclass(frozen=True)
class Work:
    unit: Unit
    steps: tuple[Step, ...]

    @property
    def since(self) -> datetime:
        """When the newest of what is missing was committed on the primary: the unit has waited
        since then (the commit point of a new unit; the rewritten object of a changed one)."""
        return max(s.modified for s in self.steps)


@dataclass(frozen=True)
class Lag:
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0
    wal_objects: int = 0
    wal_seconds: float = 0.0
    oldest: str | None = None

    def to_json(self) -> dict:
        return {"objects": self.objects, "bytes": self.bytes, "seconds": round(self.seconds, 1),
                "wal_objects": self.wal_objects, "wal_seconds": round(self.wal_seconds, 1), "oldest": self.oldest}


@dataclass(frozen=True)
class Plan:
    work: tuple[Work, ...]
    units: int                     # committed units on the primary
    skipped: tuple[str, ...] = field(default_factory=tuple)   # uncommitted / broken on the primary

    @property
    def steps(self) -> int:
        return sum(len(w.steps) for w in self.work)


def rank(key: str) -> int:
    """0: data, copied first; 1: a manifest's copy or an index entry; 2: the manifest itself."""
    base = key.rsplit("/", 1)[-1]
    if base in COMMIT_NAMES:
        return 2
    if base in COPY_NAMES or base.endswith(".json"):
        return 1
    return 0


def _ordered(kind: str, name: str, objs: Iterable[Obj]) -> Unit:
    return Unit(kind, name, tuple(sorted(objs, key=lambda o: (rank(o.key), o.key))))


def _dir_units(kind: str, groups: dict[str, list[Obj]], skipped: list[str]) -> list[Unit]:
    """One unit per directory holding a manifest/snapshot index (or its copy); a directory
    without one is not committed."""
    units = []
    for name, objs in groups.items():
        names = {o.key.rsplit("/", 1)[-1] for o in objs}
        if not names & set(COMMIT_NAMES + COPY_NAMES):
            skipped.append(name)
            continue
        units.append(_ordered(kind, name, (o for o in objs if o.key.rsplit("/", 1)[-1] not in SKIP_NAMES)))
    return units


def _paired_units(kind: str, objs: list[Obj], skipped: list[str]) -> list[Unit]:
    """An object and its ``<key>.json`` index entry (the commit point); an index entry alone is a
    unit of its own (audit digests, files keys); an object without its entry is not committed.
    A WAL file's alternate objects (``<key>@<16 hex>``: an upload that found its key taken; the
    entry says which object is the file) go with its entry."""
    by_key = {o.key: o for o in objs}
    alternates: dict[str, list[Obj]] = {}
    if kind == "wal":
        for o in objs:
            head, _, last = o.key.rpartition("/")
            base, alternate = split_alternate(last)
            if alternate:
                alternates.setdefault(f"{head}/{base}", []).append(o)
    units = []
    for o in objs:
        if o.key.endswith(".json"):
            data = [d for d in (by_key.get(o.key[:-5]), *alternates.get(o.key[:-5], ())) if d is not None]
            units.append(Unit(kind, o.key[:-5] if data else o.key, (*data, o)))
        elif o.key + ".json" in by_key:
            continue
        elif kind == "wal":
            head, _, last = o.key.rpartition("/")
            if f"{head}/{split_alternate(last)[0]}.json" not in by_key:
                skipped.append(o.key)  # pushed, not committed yet (or never will be)
        else:
            units.append(Unit(kind, o.key, (o,)))
    return units


def group_units(primary: Iterable[Obj]) -> tuple[list[Unit], list[str]]:
    """The primary's committed units in copy order, and what was skipped as not committed."""
    backups: dict[str, list[Obj]] = {}
    snapshots: dict[str, list[Obj]] = {}
    others: dict[str, list[Obj]] = {}
    flat: dict[str, list[Obj]] = {"wal": [], "log": [], "audit": [], "files-content": []}
    for o in primary:
        parts = o.key.split("/")
        base = parts[-1]
        if base.startswith(".") or base in ("gc.lock",) or len(parts) < 2:
            continue
        top = parts[0]
        if top == "backups" and len(parts) >= 3:
            backups.setdefault("/".join(parts[:2]), []).append(o)
        elif top == "wal":
            flat["wal"].append(o)
        elif top == "logs":
            flat["log"].append(o)
        elif top == "audit":
            flat["audit"].append(o)
        elif top == "files" and len(parts) >= 4 and parts[1] == "snapshots":
            snapshots.setdefault("/".join(parts[:3]), []).append(o)
        elif top == "files":
            flat["files-content"].append(o)
        else:
            others.setdefault("/".join(parts[:-1]), []).append(o)
    skipped: list[str] = []
    units = _dir_units("backup", backups, skipped) + _dir_units("files-snapshot", snapshots, skipped)
    for kind, objs in flat.items():
        units += _paired_units(kind, objs, skipped)
    for name, objs in others.items():
        names = {o.key.rsplit("/", 1)[-1] for o in objs}
        if names & set(COMMIT_NAMES + COPY_NAMES):
            units += _dir_units("other", {name: objs}, skipped)
        elif MARKER in names:
            skipped.append(name)
        else:
            units += _paired_units("other", objs, skipped)
    units.sort(key=lambda u: (KIND_ORDER[u.kind], u.name))
    return units, sorted(skipped)


def _needs(p: Obj, r: Obj | None, corrupt: frozenset[str]) -> str | None:
    if r is None:
        return "missing"
    if p.key in corrupt:
        return "corrupt"
    if p.size != r.size:
        return "size"
    if _second(p.modified) > _second(r.modified):
        return "rewritten"  # written on the primary after the replica's copy was made
    return None


def _second(t: datetime) -> datetime:
    """Times compared to the whole second: S3 keeps LastModified to the second, a file system to
    the nanosecond; a copy made in the same second as its source is not "older". (A rewrite in
    that same second is caught by the verify pass, which compares bytes.)"""
    return t.replace(microsecond=0)


def plan(primary: Iterable[Obj], replica: Iterable[Obj], *, corrupt: Iterable[str] = ()) -> Plan:
    """What to copy to bring the replica in step with the primary (never a deletion)."""
    units, skipped = group_units(primary)
    have = {o.key: o for o in replica}
    bad = frozenset(corrupt)
    work = []
    for u in units:
        steps = tuple(Step(o.key, o.size, o.modified, why) for o in u.objects
                      if (why := _needs(o, have.get(o.key), bad)))
        if steps:
            work.append(Work(u, steps))
    return Plan(tuple(work), len(units), tuple(skipped))


def lag(p: Plan, now: datetime) -> Lag:
    """Objects and bytes still to copy; seconds = age of the oldest committed change not yet on
    the replica (0 when in step), overall and for WAL alone (the RPO's part)."""
    if not p.work:
        return Lag()
    oldest = min(p.work, key=lambda w: w.since)
    wal = [w for w in p.work if w.unit.kind == "wal"]
    return Lag(objects=p.steps, bytes=sum(s.size for w in p.work for s in w.steps),
               seconds=max(0.0, (now - oldest.since).total_seconds()),
               wal_objects=sum(len(w.steps) for w in wal),
               wal_seconds=max(0.0, (now - min(w.since for w in wal)).total_seconds()) if wal else 0.0,
               oldest=oldest.unit.name)


def lag_since(primary: Iterable[Obj], caught_up_at: datetime | None, now: datetime) -> Lag:
    """The replica could not be listed: what the primary committed after the replica was last
    known in step (``caught_up_at``; None: never) is counted as not replicated — an estimate
    that only grows while the outage lasts."""
    units, _ = group_units(primary)
    late = [u for u in units if caught_up_at is None or u.committed_at > caught_up_at]
    pseudo = Plan(tuple(Work(u, tuple(Step(o.key, o.size, o.modified, "unknown") for o in u.objects)) for u in late),
                  len(units))
    return lag(pseudo, now)
