"""What changed between two snapshots: added, removed and changed paths (content, type, mode,
owner or link target; an mtime-only change is not listed), and a unified diff for text files of
classes application and system — never for secrets."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from bvh_ops.files.catalog import iter_entries, trusted_index
from bvh_ops.files.layout import Entry
from bvh_ops.files.packs import BlobReader
from bvh_ops.keys import Identity
from bvh_ops.storage.base import ObjectStore

TEXT_DIFF_MAX = 1 << 20   # bigger files get no text diff


@dataclass
class Change:
    path: str
    what: list[str]
    diff: str | None = None


@dataclass
class DiffResult:
    a: str
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "added": self.added, "removed": self.removed,
                "changed": [{"path": c.path, "what": c.what, "diff": c.diff} for c in self.changed]}


def compare(a: Entry, b: Entry) -> list[str]:
    """Pure: the kinds of change from ``a`` to ``b``."""
    what = []
    if a.type != b.type:
        return ["type"]
    if [c.address for c in a.chunks] != [c.address for c in b.chunks] or a.size != b.size:
        what.append("content")
    if a.mode != b.mode:
        what.append("mode")
    if (a.uid, a.gid) != (b.uid, b.gid):
        what.append("owner")
    if a.target != b.target:
        what.append("target")
    return what


def _text(store: ObjectStore, identities: list[Identity], e: Entry) -> list[str] | None:
    if e.type != "file" or e.size > TEXT_DIFF_MAX:
        return None
    with BlobReader(store, identities) as blobs:
        data = b"".join(blobs.read(c) for c in e.chunks)
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def diff_snapshots(store: ObjectStore, trusted: dict[str, str], identities: list[Identity], a_id: str,
                   b_id: str) -> DiffResult:
    ia = trusted_index(store, trusted, a_id, purpose="diff")
    ib = trusted_index(store, trusted, b_id, purpose="diff")
    ea = {e.path: e for e in iter_entries(store, ia.snapshot_id, identities)}
    eb = {e.path: e for e in iter_entries(store, ib.snapshot_id, identities)}
    text_ok = ia.klass != "secrets" and ib.klass != "secrets"
    out = DiffResult(ia.snapshot_id, ib.snapshot_id, sorted(eb.keys() - ea.keys()), sorted(ea.keys() - eb.keys()))
    for path in sorted(ea.keys() & eb.keys()):
        what = compare(ea[path], eb[path])
        if not what:
            continue
        change = Change(path, what)
        if "content" in what and text_ok:
            old, new = _text(store, identities, ea[path]), _text(store, identities, eb[path])
            if old is not None and new is not None:
                change.diff = "".join(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}"))
        out.changed.append(change)
    return out
