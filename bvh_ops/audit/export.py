"""Compliance export: a month's entries with the proof that they are the chain's, verifiable
without the ops database (``bvh-ops audit verify-export``, or by hand from docs in README).

JSON Lines, one object per line, in seq order:

    {"type": "header", "format", "period", "action_prefix", "hash_before", ...}
    {"type": "boundary", <entry>}   the last entry before the period's first (shows the edge)
    {"type": "entry", <entry>}      every entry of the period matching the filter, in full
    {"type": "omitted", "seq", "content_hash"}   others inside the range (another period's time,
                                    or filtered out) and those up to the covering digest
    {"type": "proof", "head_seq", "head_hash", "digest": <signed digest document>}

Each line's hash is sha256(prev || content hash) from ``hash_before``; the chain at
``head_seq`` must be ``head_hash`` and, at the digest's seq, its signed head. CSV writes the
entries as rows and the rest to ``FILE.proof.jsonl`` beside it.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg

from bvh_ops.audit import store
from bvh_ops.audit.chain import GENESIS, Digest, Entry, canonical_json, iso, link
from bvh_ops.errors import ConfigError, IntegrityError, NotFound
from bvh_ops.keys import host_key_id

FORMAT = "bvh-ops-audit-export-v1"
CSV_COLUMNS = ("seq", "at", "actor", "action", "subject", "data", "prev_hash", "hash")


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """``YYYY-MM`` -> [first instant, first instant of the next month) in UTC."""
    if not re.fullmatch(r"\d{4}-\d{2}", period):
        raise ConfigError(f"--period '{period}': use YYYY-MM, e.g. 2026-11")
    year, month = map(int, period.split("-"))
    if not 1 <= month <= 12:
        raise ConfigError(f"--period '{period}': month must be 01..12")
    start = datetime(year, month, 1, tzinfo=UTC)
    return start, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


@dataclass
class ExportSummary:
    period: str
    entries: int = 0
    omitted: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    digest_seq: int | None = None
    paths: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_period(conn: psycopg.Connection, period: str, digests: list[Digest], out: TextIO, *, fmt: str = "jsonl",
                  action_prefix: str | None = None, proof_out: TextIO | None = None) -> ExportSummary:
    """Write the period's entries (``action_prefix`` filters) and the chain proof. ``digests``
    are the verified digests; the first at or after the period's last entry covers it."""
    start, end = period_bounds(period)
    row = conn.execute("SELECT min(seq), max(seq) FROM ops.audit_chain WHERE at >= %s AND at < %s",
                       (start, end)).fetchone()
    summary = ExportSummary(period)
    if row[0] is None:
        raise NotFound(f"no audit entries in {period}")
    first, last = row
    covering = next((d for d in sorted(digests, key=lambda d: d.seq) if d.seq >= last), None)
    if covering is None:
        raise IntegrityError(f"no signed digest covers seq {last} yet: run `bvh-ops audit checkpoint` first")
    summary.first_seq, summary.last_seq, summary.digest_seq = first, last, covering.seq
    proof = proof_out if fmt == "csv" else out
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(CSV_COLUMNS)

    def emit(doc: dict[str, Any]) -> None:
        proof.write(json.dumps(doc, sort_keys=True, ensure_ascii=False) + "\n")

    before = first - 1
    boundary = store.entry(conn, before) if before >= 1 else None
    emit({"type": "header", "format": FORMAT, "period": period, "from": iso(start), "to": iso(end),
          "action_prefix": action_prefix or "", "first_seq": first, "last_seq": last,
          "hash_before": boundary.hash if boundary else GENESIS, "exported_at": iso(datetime.now(UTC))})
    if boundary is not None:
        emit({"type": "boundary", **boundary.to_json()})
    head_hash = None
    for e in store.entries(conn, from_seq=first, to_seq=covering.seq):
        inside = e.seq <= last and start <= e.at < end and e.action.startswith(action_prefix or "")
        if inside:
            summary.entries += 1
            if writer:
                doc = e.to_json()
                writer.writerow([doc[c] if c != "data" else canonical_json(doc["data"]) for c in CSV_COLUMNS])
            else:
                emit({"type": "entry", **e.to_json()})
        elif e.seq == last + 1:
            emit({"type": "boundary", **e.to_json()})
        else:
            summary.omitted += 1
            emit({"type": "omitted", "seq": e.seq, "content_hash": e.content, "hash": e.hash})
        if e.seq == last:
            head_hash = e.hash
    emit({"type": "proof", "head_seq": last, "head_hash": head_hash, "digest": covering.to_document()})
    return summary


@dataclass
class ExportCheck:
    ok: bool
    period: str = ""
    entries: int = 0
    omitted: int = 0
    digest_seq: int | None = None
    key_id: str = ""
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The export's records in order; for CSV the rows are merged into the proof file by seq."""
    proof_path = path.with_name(path.name + ".proof.jsonl")
    if proof_path.exists():
        with proof_path.open() as proof, path.open(newline="") as fh:
            rows = csv.DictReader(fh)
            pending = next(rows, None)
            for line in proof:
                doc = json.loads(line)
                seq = doc.get("seq", 1 << 62 if doc["type"] == "proof" else -1)
                while pending is not None and int(pending["seq"]) < seq:
                    yield {"type": "entry", **pending, "seq": int(pending["seq"]), "data": json.loads(pending["data"])}
                    pending = next(rows, None)
                yield doc
        return
    with path.open() as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def verify_export(path: Path, trusted_keys: dict[str, str] | None = None) -> ExportCheck:
    """Recompute the exported excerpt's chain and check it against its signed digest; with
    ``trusted_keys`` the digest must be signed by one of them, else by the key it carries
    (whose id is reported: compare it with the platform's published host key id)."""
    check = ExportCheck(ok=False)
    prev = None
    expected = None
    head = last_seq = None
    proof = None
    try:
        for doc in _records(path):
            kind = doc["type"]
            if kind == "header":
                if doc.get("format") != FORMAT:
                    raise ValueError(f"not an audit export (format {doc.get('format')!r})")
                check.period, prev, expected = doc["period"], doc["hash_before"], doc["first_seq"]
                last_seq = doc["last_seq"]
                start, end = period_bounds(doc["period"])
                continue
            if kind == "proof":
                proof = doc
                break
            if kind == "boundary" and doc["seq"] == expected - 1:
                e = Entry.from_json(doc)
                if e.at >= start or link(e.prev_hash, e.content) != prev:
                    check.problems.append(f"seq {e.seq}: the entry before the period does not match hash_before "
                                          "or is not before the period")
                continue
            if doc["seq"] != expected:
                check.problems.append(f"seq {doc['seq']}: expected seq {expected} (an entry left out or added)")
                expected = doc["seq"]
            if kind in ("entry", "boundary"):
                e = Entry.from_json(doc)
                content = e.content
                if kind == "entry" and not start <= e.at < end:
                    check.problems.append(f"seq {e.seq}: dated {iso(e.at)}, outside {check.period}")
                check.entries += kind == "entry"
            else:
                content = doc["content_hash"]
                check.omitted += 1
            prev = link(prev, content)
            if kind != "omitted" and prev != doc["hash"]:
                check.problems.append(f"seq {doc['seq']}: does not hash to the chain (modified, or not the chain's)")
                prev = doc["hash"]
            if doc["seq"] == last_seq:
                head = prev
            expected += 1
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        check.problems.append(f"unreadable export: {exc}")
        return check
    if proof is None:
        check.problems.append("no proof record at the end (truncated export)")
        return check
    digest = Digest.from_document(proof["digest"])
    check.digest_seq = digest.seq
    keys = trusted_keys or {}
    check.key_id = host_key_id(digest.public_key) if digest.public_key else ""
    why = digest.signed_by(keys or {check.key_id: digest.public_key})
    if why:
        check.problems.append(f"digest at seq {digest.seq}: {why}")
    if expected - 1 != digest.seq:
        check.problems.append(f"the excerpt ends at seq {expected - 1}, not at the digest's seq {digest.seq}")
    elif prev != digest.head_hash:
        check.problems.append(f"the recomputed chain at seq {digest.seq} is not the signed head: the excerpt was "
                              "altered")
    if head is not None and proof.get("head_hash") not in (None, head):
        check.problems.append(f"head at seq {proof['head_seq']} differs from the proof's head_hash")
    check.ok = not check.problems
    return check
