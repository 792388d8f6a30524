"""`bvh-ops keys rotate`: inventory the repository, plan (pure), then reseal item by item,
recording progress in ``keys/rotation.json``. Reads like its runbook:

1. load the keys: the identity that opens today's data keys, the target recipients;
2. inventory every sealed item (backups, WAL files, log archives, file-set data-key records);
3. check the request (last recipient, unknown key, `recipients` still naming a removed key);
4. plan: skip what is already sealed to the target, rewrap format 3, rewrite format 2;
5. carry it out, one crash-safe item at a time; a failure of one item never stops the others;
6. report, journal and audit what was done.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, ConfigError, NotFound
from bvh_ops.keys import load_identities, load_recipients
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import Repository, backup_prefix
from bvh_ops.rotation.plan import Item, Plan, check_request, plan_rotation
from bvh_ops.rotation.reseal import (
    Checkpoint,
    reseal_backup,
    reseal_files_object,
    reseal_files_record,
    reseal_indexed,
)
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import read_header

JOURNAL = "keys/rotation.json"
KEY_ID = re.compile(r"^[0-9a-f]{16}$")
FILES_KEYS = "files/keys/"


def _noop(_stage: str, _ref: str) -> None:
    pass


# -- inventory ---------------------------------------------------------------------------------


def inventory(repo: Repository) -> list[Item]:
    return [*_backups(repo), *_indexed(repo.store, "wal/", "wal"), *_indexed(repo.store, "logs/", "log"),
            *_files(repo.store)]


def _backups(repo: Repository) -> list[Item]:
    items = []
    for rec in repo.list_backups():
        if rec.status == "damaged":
            items.append(Item("backup", rec.backup_id, 0, (), rewritable=False,
                              note="no readable manifest: not rotated (see `bvh-ops verify`)"))
        if rec.status != "complete":
            continue
        loaded = repo.load_manifest(rec.backup_id)
        m = loaded.manifest
        if not m.objects:
            continue  # a WAL-only increment: no data key
        version = 3 if all(o.envelopes for o in m.objects) else 2
        kids = tuple(dict.fromkeys(k for o in m.objects for k in o.key_ids))
        note = "" if loaded.signature_ok else f"manifest {loaded.signature_detail}: not rotated (see `bvh-ops verify`)"
        # A rewrite interrupted after its commit leaves the superseded format-2 object behind.
        pending = any(o.stored_name and repo.store.stat(backup_prefix(rec.backup_id) + o.name) is not None
                      for o in m.objects)
        items.append(Item("backup", rec.backup_id, version, kids, pending=pending, rewritable=loaded.signature_ok,
                          note=note))
    return items


def _indexed(store: ObjectStore, prefix: str, kind: str) -> list[Item]:
    items = []
    for info in store.list(prefix):
        if not info.key.endswith(".json") or info.key.rsplit("/", 1)[-1].startswith("."):
            continue
        try:
            entry = json.loads(store.get_bytes(info.key))
        except (NotFound, ValueError):
            continue
        if "stored_sha256" not in entry:
            continue
        version = 3 if entry.get("envelopes") else 2
        items.append(Item(kind, info.key[:-5], version, tuple(entry.get("key_ids", ())),
                          pending="rewrite" in entry))
    return items


def _files(store: ObjectStore) -> list[Item]:
    """Format-3 file sets: one data-key record per snapshot run. Format-2 file sets (envelopes
    in every chunk's header) are found through their snapshots' entries objects and reported:
    a rotation cannot rewrite them (a new snapshot and `files gc` after the old ones expire can)."""
    items = []
    for info in store.list(FILES_KEYS):
        name = info.key.rsplit("/", 1)[-1]
        if name.startswith("data-") and name.endswith(".json"):
            doc = json.loads(store.get_bytes(info.key))
            items.append(Item("files", info.key, 3, tuple(doc.get("key_ids", ()))))
        elif name.startswith("content-") and name.endswith(".enc"):
            with store.open_reader(info.key) as body:
                header = read_header(body, expect_bind=info.key)
            if header.version == 2:  # format 3: covered by its data-key record
                items.append(Item("files", info.key, 2, tuple(e.key_id for e in header.envelopes)))
    for info in store.list("files/snapshots/"):
        if not info.key.endswith("/entries.jsonl.enc"):
            continue
        with store.open_reader(info.key) as body:
            header = read_header(body, expect_bind=info.key)
        if header.version == 2:
            items.append(Item("files", info.key, 2, tuple(e.key_id for e in header.envelopes), rewritable=False,
                              note="file set snapshotted before format 3: cannot be rewritten by a rotation; take "
                                   "a new snapshot, then `files forget` this one and `files gc`"))
    return items


# -- the run -----------------------------------------------------------------------------------


@dataclass
class RotationReport:
    dry_run: bool
    target: tuple[str, ...]
    removed: tuple[str, ...]
    planned: dict[str, dict[str, int]] = field(default_factory=dict)
    rewrapped: dict[str, int] = field(default_factory=dict)
    rewritten: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0
    left: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    key_ids_in_use: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not (self.removed and self.left)

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "ok": self.ok, "target_key_ids": list(self.target),
                "removed_key_ids": list(self.removed), "planned": self.planned, "rewrapped": self.rewrapped,
                "rewritten_format_2": self.rewritten, "unchanged": self.unchanged, "left": self.left,
                "failed": self.failed, "key_ids_in_use": self.key_ids_in_use, "warnings": self.warnings,
                "seconds": round(self.seconds, 3)}

    def render(self) -> str:
        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{n} {k}" for k, n in sorted(d.items())) or "nothing"

        head = "would rotate" if self.dry_run else "rotated"
        lines = [f"{head} to key ids {', '.join(self.target)}"
                 + (f" (removing {', '.join(self.removed)})" if self.removed else "")]
        if self.dry_run:
            lines.append(f"  rewrap (new envelopes, objects untouched): {counts(self.planned.get('rewrap', {}))}")
            lines.append(f"  rewrite (format 2, re-encrypted):          {counts(self.planned.get('rewrite', {}))}")
        else:
            lines.append(f"  rewrapped: {counts(self.rewrapped)}")
            lines.append(f"  rewritten (format 2): {counts(self.rewritten)}")
        lines.append(f"  unchanged (already sealed to the target): {self.unchanged}")
        lines += [f"  LEFT {x['kind']} {x['ref']}: {x['reason']}" for x in self.left]
        lines += [f"  FAILED {x['kind']} {x['ref']}: {x['error']}" for x in self.failed]
        lines += [f"  note: {w}" for w in self.warnings]
        return "\n".join(lines)


def resolve_removed(values: list[str]) -> tuple[str, ...]:
    """--remove takes a key id (16 hex digits) or a recipient.pub file."""
    out = []
    for v in values:
        if Path(v).is_file():
            out += [r.key_id for r in load_recipients([Path(v)])]
        elif KEY_ID.match(v):
            out.append(v)
        else:
            raise ConfigError(f"--remove {v}: neither a key id (16 hex digits) nor a recipient.pub file")
    return tuple(dict.fromkeys(out))


def _journal(store: ObjectStore, doc: dict[str, Any]) -> None:
    store.put_bytes(JOURNAL, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")


def rotate(settings: Settings, *, add: list[Path], remove: list[str], dry_run: bool = False,
           now: datetime | None = None, checkpoint: Checkpoint = _noop) -> RotationReport:
    now = now or datetime.now(UTC)
    t0 = time.monotonic()
    # 1. keys
    configured = load_recipients(settings.require_recipients())
    added = load_recipients(list(add))
    removed = resolve_removed(remove)
    identities = load_identities(settings.require_identity())
    repo, host_key = open_repository(settings)
    # 2. inventory  3. the request
    items = inventory(repo)
    target = check_request(tuple(r.key_id for r in configured), tuple(r.key_id for r in added), removed,
                           tuple(r.key_id for r in configured), items)
    by_id = {r.key_id: r for r in (*configured, *added)}
    recipients = [by_id[k] for k in target]
    # 4. plan
    plan = plan_rotation(items, target, removed)
    report = RotationReport(dry_run, plan.target, plan.removed,
                            key_ids_in_use=sorted({k for it in items for k in it.key_ids}))
    report.warnings = [f"key {r.key_id} is not in `recipients`: backups, WAL and log archives written from now on "
                       "will not be sealed to it; add it to `recipients` (BVH_OPS_RECIPIENTS)"
                       for r in added if r.key_id not in {c.key_id for c in configured}]
    report.planned = {a: dict(plan.count(a)) for a in ("rewrap", "rewrite", "skip", "left")}
    report.unchanged = sum(plan.count("skip").values())
    report.left = [{"kind": s.item.kind, "ref": s.item.ref, "reason": s.reason} for s in plan.steps
                   if s.action == "left"]
    if dry_run:
        report.seconds = time.monotonic() - t0
        return report
    # 5. carry it out
    journal = {"state": "running", "started_at": now.isoformat(), "target_key_ids": list(plan.target),
               "removed_key_ids": list(plan.removed), "total": len(plan.work), "done": 0}
    _journal(repo.store, journal)
    _execute(settings, repo, host_key, plan, identities, recipients, now, report, journal, checkpoint)
    # 6. report, journal, audit
    report.seconds = time.monotonic() - t0
    journal.update(state="done" if report.ok else "incomplete", finished_at=datetime.now(UTC).isoformat(),
                   failed=len(report.failed), left=len(report.left))
    _journal(repo.store, journal)
    from bvh_ops.audit.record import record

    record(settings, None, "keys.rotate", ",".join(plan.target),
           {k: v for k, v in report.to_json().items() if k not in ("left", "failed")}
           | {"failed": len(report.failed), "left": len(report.left)})
    return report


def _execute(settings: Settings, repo: Repository, host_key, plan: Plan, identities, recipients, now: datetime,
             report: RotationReport, journal: dict[str, Any], checkpoint: Checkpoint) -> None:
    level, seg = settings.compression_level, settings.segment_size_kib << 10
    for n, step in enumerate(plan.work, 1):
        it = step.item
        try:
            if it.kind == "backup":
                how = reseal_backup(repo, host_key, it.ref, identities=identities, recipients=recipients, now=now,
                                    level=level, segment_size=seg, checkpoint=checkpoint)
            elif it.kind in ("wal", "log"):
                how = reseal_indexed(repo.store, it.ref, identities=identities, recipients=recipients, level=level,
                                     segment_size=seg, checkpoint=checkpoint)
            elif it.ref.endswith(".enc"):
                how = reseal_files_object(repo.store, it.ref, identities=identities, recipients=recipients,
                                          level=level, segment_size=seg)
            else:
                how = reseal_files_record(repo.store, it.ref, identities=identities, recipients=recipients)
        except BvhOpsError as exc:
            report.failed.append({"kind": it.kind, "ref": it.ref, "error": str(exc)})
            continue
        bucket = report.rewrapped if how == "rewrapped" else report.rewritten
        bucket[it.kind] = bucket.get(it.kind, 0) + 1
        checkpoint("item-done", it.ref)
        if n % 100 == 0:
            journal["done"] = n
            _journal(repo.store, journal)
    journal["done"] = len(plan.work)
    _sweep_staged(repo.store)


def _sweep_staged(store: ObjectStore) -> None:
    """Staged re-encryptions (``.rotate-<name>``) whose entry no longer has a pending rewrite are
    leftovers of a run interrupted after its last step: delete them."""
    for prefix in ("wal/", "logs/"):
        for info in store.list(prefix):
            head, _, name = info.key.rpartition("/")
            if not name.startswith(".rotate-"):
                continue
            try:
                entry = json.loads(store.get_bytes(f"{head}/{name.removeprefix('.rotate-')}.json"))
            except (NotFound, ValueError):
                entry = {}
            if "rewrite" not in entry:
                store.delete(info.key)
