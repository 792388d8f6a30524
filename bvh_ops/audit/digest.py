"""Signed digests of the audit chain (ops.audit_digests and ``audit/digests/<seq>.json`` in the
repository), and the whole-trail verification that holds the chain against them.

A digest is signed with the host's Ed25519 key (the key that signs manifests) and trusted like a
manifest: our own key plus ``trusted_host_keys``. The repository's copy is what an attacker with
only the ops database cannot reach: a digest in one place and not the other is reported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import datetime

import psycopg

from bvh_ops.audit import store
from bvh_ops.audit.chain import Digest, Finding, Problem, Report, make_digest, verify
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, IntegrityError, NotFound
from bvh_ops.keys import load_or_create_host_key
from bvh_ops.repository.open import trusted_keys
from bvh_ops.storage import ObjectStore, open_store

log = logging.getLogger("bvh_ops.audit")

PREFIX = "audit/digests/"
DIGEST_LOCK_KEY = 0x6276682D646967  # "bvh-dig": one checkpoint at a time
_DIGEST_COLUMNS = "seq, head_hash, entries, at, prev_digest_sha256, signature, public_key, object_key"


def object_key(seq: int) -> str:
    return f"{PREFIX}{seq:012d}.json"  # zero-padded: listings sort by seq


def db_digests(conn: psycopg.Connection) -> list[Digest]:
    return [Digest(*r) for r in conn.execute(f"SELECT {_DIGEST_COLUMNS} FROM ops.audit_digests ORDER BY seq")]


def repo_digests(objects: ObjectStore) -> tuple[list[Digest], list[str]]:
    """The digests in the repository, and the keys of those that do not parse."""
    found, bad = [], []
    for info in objects.list(PREFIX):
        if not info.key.endswith(".json"):
            continue
        try:
            found.append(Digest.from_document(json.loads(objects.get_bytes(info.key)), info.key))
        except (ValueError, KeyError, TypeError, NotFound):
            bad.append(info.key)
    return found, bad


def checkpoint(settings: Settings, conn: psycopg.Connection, now: datetime, *,
               objects: ObjectStore | None = None) -> tuple[Digest, bool]:
    """Sign the chain's head and store the digest in the ops database and the repository;
    ``(digest, True)``, or ``(latest digest, False)`` when nothing was appended since it. The
    entries since the last digest are verified first: a broken chain is never signed."""
    objects = objects or open_store(settings)
    key = load_or_create_host_key(settings.state_dir)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (DIGEST_LOCK_KEY,))
        row = conn.execute(f"SELECT {_DIGEST_COLUMNS} FROM ops.audit_digests ORDER BY seq DESC LIMIT 1").fetchone()
        latest = Digest(*row) if row else None
        seq, head_hash, count = store.head(conn)
        if seq == 0:
            raise NotFound("the audit trail is empty: nothing to sign yet")
        if latest is not None and latest.seq == seq:
            return replace(latest, object_key=_located(latest)[1]), False
        since = latest.seq if latest else 1
        if latest is not None:
            anchor = store.entry(conn, latest.seq)
            why = latest.signed_by(trusted_keys(settings, key, objects))
            if why or anchor is None or anchor.hash != latest.head_hash:
                raise IntegrityError(f"the chain at seq {latest.seq} is not the last digest's signed head"
                                     f"{f' ({why})' if why else ''}: not signing (run `bvh-ops audit verify`)")
        report = verify(store.entries(conn, from_seq=since), [], {}, from_seq=since)
        if not report.ok:
            raise IntegrityError(f"audit chain broken since the last digest, not signing it: "
                                 f"{report.findings[0].line()} (run `bvh-ops audit verify`)")
        if report.head_seq != seq:
            raise IntegrityError(f"audit chain moved while signing (head {seq}, read up to {report.head_seq})")
        digest = make_digest(seq, head_hash, count, now, latest, key)
        okey = object_key(seq)
        # Where the copy goes is recorded with it: a command pointed at another repository (a
        # one-off BVH_OPS_REPOSITORY) signs there, and verify looks for that copy there.
        conn.execute(f"INSERT INTO ops.audit_digests ({_DIGEST_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                     (digest.seq, digest.head_hash, digest.entries, digest.at, digest.prev_digest_sha256,
                      digest.signature, digest.public_key, f"{objects.url}#{okey}"))
        # The repository copy before the commit: a failed upload leaves neither copy.
        objects.put_bytes(okey, json.dumps(digest.to_document(), indent=1, sort_keys=True).encode() + b"\n")
    log.info("audit digest at seq %d signed (%s)", seq, okey)
    return replace(digest, object_key=okey), True


def compare_copies(in_db: list[Digest], in_repo: list[Digest], unreadable: list[str]) -> tuple[list[Digest],
                                                                                              list[Finding]]:
    """One digest per seq (the repository's where both exist and differ: it is the copy outside
    the ops database's reach) and what differs between the two places."""
    findings = [Finding(Problem.DIGEST_DIFFERS, None, f"repository object {k} is not a readable digest")
                for k in unreadable]
    db = {d.seq: d for d in in_db}
    repo = {d.seq: d for d in in_repo}
    merged = []
    for seq in sorted(db.keys() | repo.keys()):
        a, b = db.get(seq), repo.get(seq)
        if a is None:
            findings.append(Finding(Problem.DIGEST_MISSING, seq, f"digest at seq {seq} is in the repository "
                                    "but not in the ops database (deleted there?)"))
        elif b is None:
            url = _located(a)[0]
            findings.append(Finding(Problem.DIGEST_MISSING, seq, f"digest at seq {seq} is in the ops database "
                                    f"but not in the repository{f' it was signed into ({url})' if url else ''}"))
        elif (a.body(), a.signature) != (b.body(), b.signature):
            findings.append(Finding(Problem.DIGEST_DIFFERS, seq, f"digest at seq {seq} differs between the ops "
                                    "database and the repository"))
        merged.append(b or a)
    return merged, findings


def _located(d: Digest) -> tuple[str | None, str]:
    """(repository URL, key) of a digest's copy as the ops database recorded it (digests signed
    before 2026-11-30 name only the key: the repository being verified)."""
    loc = d.object_key or object_key(d.seq)
    url, sep, key = loc.rpartition("#")
    return (url, key) if sep else (None, loc)


def _with_copies_elsewhere(settings: Settings, home: ObjectStore, in_db: list[Digest], in_repo: list[Digest],
                           pre: list[Finding]) -> tuple[list[Digest], list[Finding]]:
    """The repository copies of digests the ops database says were signed into another
    repository, read there; one that cannot be read there is reported (not passed)."""
    have = {d.seq for d in in_repo}
    elsewhere: dict[str, list[tuple[Digest, str]]] = {}
    for d in in_db:
        url, key = _located(d)
        if url is not None and url != home.url and d.seq not in have:
            elsewhere.setdefault(url, []).append((d, key))
    out = list(in_repo)
    for url, wanted in elsewhere.items():
        try:
            other = open_store(settings.model_copy(update={"repository": url}))
            for _, key in wanted:
                try:
                    out.append(Digest.from_document(json.loads(other.get_bytes(key)), key))
                except NotFound:
                    continue  # compare_copies reports it missing
        except (BvhOpsError, OSError, ValueError, KeyError, TypeError) as exc:
            pre.append(Finding(Problem.DIGEST_MISSING, wanted[0][0].seq,
                               f"digests {', '.join(str(d.seq) for d, _ in wanted)} were signed into repository "
                               f"{url}, which could not be read ({exc}): not verified there"))
    return out, pre


def verify_trail(settings: Settings, conn: psycopg.Connection, *, from_seq: int = 1,
                 objects: ObjectStore | None = None) -> Report:
    """The whole check: the digests of both places compared, signatures and digest chain, then
    the chain recomputed entry by entry against them (streamed through a server-side cursor,
    in a transaction of its own)."""
    key = load_or_create_host_key(settings.state_dir)
    in_db = db_digests(conn)
    pre: list[Finding] = []
    try:
        objects = objects or open_store(settings)
        in_repo, unreadable = repo_digests(objects)
    except BvhOpsError as exc:
        in_repo, unreadable = in_db, []
        pre.append(Finding(Problem.DIGEST_MISSING, None, f"the repository's digests could not be read ({exc}): "
                           "checked against the ops database's copies only"))
    else:
        in_repo, pre = _with_copies_elsewhere(settings, objects, in_db, in_repo, pre)
    merged, found = compare_copies(in_db, in_repo, unreadable)
    with conn.transaction():
        report = verify(store.entries(conn, from_seq=from_seq), merged, trusted_keys(settings, key, objects),
                        from_seq=from_seq)
    report.findings[:0] = pre + found
    return report
