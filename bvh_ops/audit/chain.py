"""The audit hash chain, pure: canonical form of an entry, its hash, the signed digests, and a
streaming verifier that names the first bad entry.

    content = sha256(canonical entry)            canonical: sorted-key compact JSON of
    hash    = sha256(prev_hash || content)       seq, at (UTC ISO), actor, action, subject, data
    prev_hash of seq 1 = 64 zeros

Hashing the entry's content hash rather than the entry itself (Certificate Transparency's leaf
hash) lets an export leave entries out as their content hash alone and still be verified.
A digest {seq, head_hash, entries, at, prev_digest_sha256} is signed with the host's Ed25519 key
and chained to the previous digest by the sha256 of its canonical body.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bvh_ops.keys import HostKey, host_key_id, verify_signature

GENESIS = "0" * 64
DIGEST_FORMAT = "bvh-ops-audit-digest-v1"
MAX_PROBLEMS = 1000  # a wholesale rewrite is reported once per kind after this many lines


def canonical_json(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def iso(at: datetime) -> str:
    """UTC, microseconds always written: the one text form of a time in the chain."""
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def normalise(data: Any) -> Any:
    """``data`` as it comes back from a jsonb column, so the hash taken at append is the one
    recomputed at verify: JSON types only (anything else as its str), integral floats of 1e16
    and more as ints (jsonb prints them without exponent, json reads them back as int), NUL
    characters replaced (jsonb refuses them)."""
    if isinstance(data, Mapping):
        return {str(k).replace("\x00", "\ufffd"): normalise(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [normalise(v) for v in data]
    if isinstance(data, bool) or data is None or isinstance(data, int):
        return data
    if isinstance(data, float):
        if data != data or data in (float("inf"), float("-inf")):
            return str(data)
        return int(data) if data.is_integer() and abs(data) >= 1e16 else data
    return str(data).replace("\x00", "\ufffd")


def content_hash(seq: int, at: datetime, actor: str, action: str, subject: str, data: Any) -> str:
    doc = {"seq": seq, "at": iso(at), "actor": actor, "action": action, "subject": subject, "data": data}
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def link(prev_hash: str, content: str) -> str:
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One row of ops.audit_chain."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    data: Any
    prev_hash: str
    hash: str

    @property
    def content(self) -> str:
        return content_hash(self.seq, self.at, self.actor, self.action, self.subject, self.data)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": iso(self.at), "actor": self.actor, "action": self.action,
                "subject": self.subject, "data": self.data, "prev_hash": self.prev_hash, "hash": self.hash}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Entry:
        return cls(int(doc["seq"]), datetime.fromisoformat(doc["at"]), doc["actor"], doc["action"],
                   doc.get("subject", ""), doc.get("data", {}), doc["prev_hash"], doc["hash"])


# -- digests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    """A signed checkpoint of the chain: its head at ``seq``."""

    seq: int
    head_hash: str
    entries: int
    at: datetime
    prev_digest_sha256: str
    signature: str = field(default="", repr=False)
    public_key: str = ""
    object_key: str | None = None

    def body(self) -> dict[str, Any]:
        return {"seq": self.seq, "head_hash": self.head_hash, "entries": self.entries, "at": iso(self.at),
                "prev_digest_sha256": self.prev_digest_sha256}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.body()).encode()).hexdigest()

    def signed_by(self, trusted_keys: Mapping[str, str]) -> str | None:
        """None when the signature verifies against a trusted key; else why not."""
        kid = host_key_id(self.public_key) if self.public_key else ""
        if kid not in trusted_keys:
            return f"signed by untrusted host key {kid or '?'}"
        if not verify_signature(trusted_keys[kid], self.signature, canonical_json(self.body()).encode()):
            return "signature does not verify (digest edited or forged)"
        return None

    def to_document(self) -> dict[str, Any]:
        """The repository object (and the export's proof)."""
        return {"format": DIGEST_FORMAT, "digest": self.body(),
                "signature": {"alg": "ed25519", "key_id": host_key_id(self.public_key) if self.public_key else "",
                              "public_key": self.public_key, "value": self.signature}}

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], object_key: str | None = None) -> Digest:
        if doc.get("format") != DIGEST_FORMAT:
            raise ValueError(f"not an audit digest (format {doc.get('format')!r})")
        body, sig = doc["digest"], doc["signature"]
        return cls(int(body["seq"]), body["head_hash"], int(body["entries"]), datetime.fromisoformat(body["at"]),
                   body["prev_digest_sha256"], sig.get("value", ""), sig.get("public_key", ""), object_key)


def make_digest(seq: int, head_hash: str, entries: int, at: datetime, prev: Digest | None, key: HostKey) -> Digest:
    """A new digest after ``prev``, signed with the host key."""
    unsigned = Digest(seq, head_hash, entries, at, prev.sha256 if prev else GENESIS)
    value = key.sign(canonical_json(unsigned.body()).encode())
    return Digest(seq, head_hash, entries, at, unsigned.prev_digest_sha256, value, key.public_b64)


# -- verification ---------------------------------------------------------------------------


class Problem(enum.StrEnum):
    MODIFIED = "modified"            # content does not match its hash
    MISSING = "missing"              # seq gap: entries deleted
    INSERTED = "inserted"            # an entry that links to a predecessor another entry links to
    REORDERED = "reordered"          # an entry that hashes as another seq
    BROKEN_LINK = "broken_link"      # prev_hash is not the previous entry's hash
    TRUNCATED = "truncated"          # the chain ends before a signed digest's head
    HEAD_MISMATCH = "head_mismatch"  # the chain at a digest's seq is not the signed head
    DIGEST_SIGNATURE = "digest_signature"
    DIGEST_CHAIN = "digest_chain"
    DIGEST_MISSING = "digest_missing"  # in the repository but not the ops database, or the reverse
    DIGEST_DIFFERS = "digest_differs"


@dataclass(frozen=True)
class Finding:
    problem: Problem
    seq: int | None  # the entry (or digest head) concerned
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"problem": str(self.problem), "seq": self.seq, "detail": self.detail}

    def line(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        return f"{where}: {self.problem}: {self.detail}"


@dataclass
class Report:
    entries: int = 0  # entries read
    first_seq: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS
    digests: int = 0
    newest_digest: int | None = None
    findings: list[Finding] = field(default_factory=list)
    more: int = 0  # findings beyond MAX_PROBLEMS, counted only

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first_bad(self) -> int | None:
        seqs = [f.seq for f in self.findings if f.seq is not None and f.problem not in _DIGEST_ONLY]
        return min(seqs) if seqs else None

    def add(self, problem: Problem, seq: int | None, detail: str) -> None:
        if len(self.findings) < MAX_PROBLEMS:
            self.findings.append(Finding(problem, seq, detail))
        else:
            self.more += 1

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_seq": self.first_seq, "head_seq": self.head_seq,
                "head_hash": self.head_hash, "digests": self.digests, "newest_digest": self.newest_digest,
                "first_bad_seq": self.first_bad, "problems": [f.to_json() for f in self.findings],
                "more_problems": self.more}


_DIGEST_ONLY = {Problem.DIGEST_SIGNATURE, Problem.DIGEST_CHAIN, Problem.DIGEST_MISSING, Problem.DIGEST_DIFFERS}


def check_digests(digests: Iterable[Digest], trusted_keys: Mapping[str, str], report: Report) -> list[Digest]:
    """Signatures and the digest chain; returns the digests that verify, by seq (only these
    are trusted to say what the chain's head was)."""
    good: list[Digest] = []
    prev: Digest | None = None
    for d in sorted(digests, key=lambda d: d.seq):
        report.digests += 1
        why = d.signed_by(trusted_keys)
        if why:
            report.add(Problem.DIGEST_SIGNATURE, d.seq, f"digest at seq {d.seq}: {why}")
            prev = d
            continue
        expected = prev.sha256 if prev else GENESIS
        if d.prev_digest_sha256 != expected:
            before = f"digest at seq {prev.seq}" if prev else "the start (no earlier digest)"
            report.add(Problem.DIGEST_CHAIN, d.seq, f"digest at seq {d.seq} does not chain to {before}: a digest "
                       "was removed, replaced or inserted")
        if d.entries != d.seq:
            report.add(Problem.DIGEST_CHAIN, d.seq, f"digest at seq {d.seq} counts {d.entries} entries")
        good.append(d)
        prev = d
    report.newest_digest = good[-1].seq if good else None
    return good


def verify(entries: Iterable[Entry], digests: Iterable[Digest], trusted_keys: Mapping[str, str], *,
           from_seq: int = 1) -> Report:
    """Recompute the chain from ``entries`` (in seq order, streamed: memory does not grow with the
    chain) and hold it against the signed ``digests``. Starting past seq 1 (``from_seq``) takes
    the first entry's prev_hash as given. After a finding, checking goes on from what is stored
    (and from a detected renumbering), so one tamper is one finding, not one per later entry."""
    report = Report()
    pending = [d for d in check_digests(digests, trusted_keys, report) if d.seq >= from_seq]
    di = 0
    expected_seq = from_seq
    prev_hash: str | None = GENESIS if from_seq <= 1 else None
    prev_prev: str | None = None  # prev_hash of the previous entry: spots an inserted entry
    shift = 0  # entries renumbered by a deletion or insertion hash as seq + shift
    prev_flagged = False
    last_signed = from_seq - 1  # seq of the last digest head passed
    for e in entries:
        if report.first_seq is None:
            report.first_seq = e.seq
        report.entries += 1
        # Digests whose seq this entry jumped over: that entry is not in the chain.
        while di < len(pending) and pending[di].seq < e.seq:
            d = pending[di]
            report.add(Problem.HEAD_MISMATCH, d.seq, f"entry {d.seq}, the head of the digest signed {iso(d.at)}, "
                       "is not in the chain")
            di += 1
        flagged = True
        if e.seq > expected_seq:
            gap = str(expected_seq) if e.seq == expected_seq + 1 else f"{expected_seq}..{e.seq - 1}"
            report.add(Problem.MISSING, expected_seq, f"entr{'ies' if '.' in gap else 'y'} {gap} missing (deleted): "
                       f"the chain jumps from {expected_seq - 1} to {e.seq}")
        elif e.seq < expected_seq:
            report.add(Problem.REORDERED, e.seq, f"entry {e.seq} comes after entry {expected_seq - 1}")
        elif shift and _hashes_as(e, e.seq + shift):
            pass  # the same renumbering as the entry before: already reported
        elif _hashes_as(e, e.seq):
            shift = 0
            if prev_hash is None or e.prev_hash == prev_hash or prev_flagged:
                flagged = False
            elif prev_prev is not None and e.prev_hash == prev_prev:
                report.add(Problem.INSERTED, e.seq - 1, f"entry {e.seq - 1} was inserted: entry {e.seq} links to "
                           "the same predecessor")
            else:
                report.add(Problem.BROKEN_LINK, e.seq - 1, f"entry {e.seq} does not link to entry {e.seq - 1}'s hash: "
                           f"entry {e.seq - 1} rewritten with a recomputed hash (or entry {e.seq}'s link edited)")
        else:
            problem, seq, detail, shift = _why_mismatch(e, prev_prev)
            report.add(problem, seq, detail)
        prev_flagged = flagged
        prev_prev, prev_hash = e.prev_hash, e.hash
        expected_seq = max(expected_seq, e.seq + 1)
        report.head_seq, report.head_hash = e.seq, e.hash
        if di < len(pending) and pending[di].seq == e.seq:
            d = pending[di]
            if e.hash != d.head_hash:
                report.add(Problem.HEAD_MISMATCH, e.seq, f"the chain's hash at seq {e.seq} is not the head signed "
                           f"in the digest of {iso(d.at)}: an entry in {last_signed + 1}..{e.seq} was rewritten "
                           "(every later hash recomputed)")
            last_signed = e.seq
            di += 1
    if di < len(pending):
        d = pending[-1]
        report.add(Problem.TRUNCATED, report.head_seq + 1,
                   f"the chain ends at seq {report.head_seq} but the digest signed {iso(d.at)} covers up to seq "
                   f"{d.seq}: entries {report.head_seq + 1}..{d.seq} deleted")
    return report


def _hashes_as(e: Entry, seq: int) -> bool:
    return link(e.prev_hash, content_hash(seq, e.at, e.actor, e.action, e.subject, e.data)) == e.hash


def _why_mismatch(e: Entry, prev_prev: str | None) -> tuple[Problem, int, str, int]:
    """An entry whose hash does not match: one that hashes right under a neighbouring seq was
    moved (reordered) or renumbered around an insertion or deletion; otherwise it was edited.
    Returns the finding and the renumbering later entries may share."""
    for delta in (-1, 1, -2, 2):
        if _hashes_as(e, e.seq + delta):
            if delta == -1 and e.prev_hash == prev_prev:
                return (Problem.INSERTED, e.seq - 1, f"entry {e.seq - 1} was inserted: entry {e.seq} is entry "
                        f"{e.seq - 1} renumbered", delta)
            if delta == 1:
                return (Problem.REORDERED, e.seq, f"entry {e.seq} holds entry {e.seq + 1}: entries reordered, or "
                        f"entry {e.seq} deleted and the rest renumbered", delta)
            return (Problem.REORDERED, e.seq, f"entry {e.seq} holds entry {e.seq + delta} (reordered)", delta)
    return (Problem.MODIFIED, e.seq, "content does not match its hash (modified)", 0)
