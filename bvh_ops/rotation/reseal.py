"""Carrying out one rotation step, crash-safe at every point.

Rewrap (format 3): open the data key with the operator's identity, seal it to the target
recipients, write the new envelopes where they live — a new signed manifest version (copy
first, then the main one: the commit point), or the index entry / data-key record (one atomic
put). The object is never touched.

Rewrite (format 2): re-encrypt the object, streamed, into format 3 with a fresh data key, verify
it by reading it back, then commit:
- a backup object goes to a new name (``<name>.f3``) and the new manifest version names it; the
  old object is deleted only after that manifest is written;
- a WAL file or log archive is rewritten in place: staged beside it (``.rotate-<name>``, bound to
  the final key), the index entry records the staged object as ``rewrite`` (its sha256 and
  envelopes: readers and verify accept either object while the swap is pending), the object is
  replaced (an atomic put), then the entry is finalised and the staged copy removed.
At any moment each item opens with the old recipient set or with the new one; a re-run
finishes what an interrupted one left.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from bvh_ops.errors import CryptoError, IntegrityError
from bvh_ops.keys import HostKey, Identity, Recipient
from bvh_ops.repository.manifest import sign_manifest
from bvh_ops.repository.repo import MANIFEST, MANIFEST_COPY, Repository, backup_prefix, object_key
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import (
    DecryptingReader,
    EncryptingWriter,
    Envelope,
    StreamStats,
    copy_stream,
    data_key_id,
    entry_envelopes,
    envelopes_from_json,
    envelopes_json,
    open_data_key,
    plain_hash,
    read_header,
    recorded_digest,
    seal_data_key,
)
from bvh_ops.wal.store import entry_object

CHUNK = 1 << 20
REWRITTEN_SUFFIX = ".f3"
Checkpoint = Callable[[str, str], None]


def _noop(_stage: str, _ref: str) -> None:
    pass


def _sealed(data_key: bytes, recipients: list[Recipient]) -> list[dict[str, str]]:
    return envelopes_json(seal_data_key(data_key, recipients))


def open_key(store: ObjectStore, key: str, identities: list[Identity], envelopes: list[Envelope]) -> bytes:
    """The data key of a format-3 object (only its header is read; checked against ``dk``)."""
    with store.open_reader(key) as body:
        header = read_header(body, expect_bind=key)
    return open_data_key(header, identities, envelopes)


def header_version(store: ObjectStore, key: str) -> int:
    with store.open_reader(key) as body:
        return read_header(body, expect_bind=key).version


def reencrypt(store: ObjectStore, src: str, dst: str, *, bind: str, identities: list[Identity],
              envelopes: list[Envelope], plaintext: tuple[str, str], level: int, segment_size: int
              ) -> tuple[StreamStats, bytes]:
    """Stream ``src`` (any format) into a new format-3 object at ``dst`` bound to ``bind``,
    with a fresh data key; read it back (stored bytes and plaintext) before returning.
    ``plaintext``: (algorithm, hex) the content must hash to; the new object's is the same."""
    data_key = os.urandom(32)
    writer = store.open_writer(dst)
    try:
        enc = EncryptingWriter(sink=writer, data_key=data_key, compression_level=level, segment_size=segment_size,
                               bind=bind, plain_hash_alg=plaintext[0])
        with store.open_reader(src) as body:
            reader = DecryptingReader(body, identities, bind=src, envelopes=envelopes)
            while chunk := reader.read(CHUNK):
                enc.write(chunk)
        stats = enc.close()
        if stats.plaintext_digest[1] != plaintext[1]:
            raise IntegrityError(f"{src}: decrypted content differs from its manifest or index (damaged?): not rotated")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    _verify(store, dst, bind, data_key, stats, plaintext[0])
    return stats, data_key


def _verify(store: ObjectStore, key: str, bind: str, data_key: bytes, stats: StreamStats, alg: str = "sha256") -> None:
    stored, plain = hashlib.sha256(), plain_hash(alg)

    class _Tee:
        def __init__(self, inner):
            self.inner = inner

        def read(self, n=-1):
            data = self.inner.read(n)
            stored.update(data)
            return data

    with store.open_reader(key) as body:
        tee = _Tee(body)
        reader = DecryptingReader(tee, [], bind=bind, data_key=data_key)
        while chunk := reader.read(CHUNK):
            plain.update(chunk)
        while tee.read(CHUNK):
            pass
    if stored.hexdigest() != stats.stored_sha256 or plain.hexdigest() != stats.plaintext_digest[1]:
        raise IntegrityError(f"{key}: the re-encrypted object does not read back as written: not committed")


# -- backups: a new signed manifest version --------------------------------------------------


def reseal_backup(repo: Repository, host_key: HostKey, backup_id: str, *, identities: list[Identity],
                  recipients: list[Recipient], now: datetime, level: int, segment_size: int,
                  checkpoint: Checkpoint = _noop) -> str:
    """Rewrap (or rewrite) every object of one backup and commit a new manifest version.
    Returns 'rewrapped' or 'rewritten'."""
    loaded = repo.load_manifest(backup_id)
    if not loaded.signature_ok:
        raise IntegrityError(f"backup {backup_id}: manifest {loaded.signature_detail}: not rotated")
    m = loaded.manifest
    prefix = backup_prefix(backup_id)
    ids = tuple(r.key_id for r in recipients)
    leftovers = [prefix + o.name for o in m.objects if o.stored_name and repo.store.stat(prefix + o.name) is not None]
    if leftovers and set(m.key_ids) == set(ids):
        for key in leftovers:  # a rewrite interrupted after its commit: only the old object to delete
            repo.store.delete(key)
        return "rewritten"
    objects, superseded, how = [], [], "rewrapped"
    for e in m.objects:
        key = object_key(backup_id, e)
        if e.envelopes and header_version(repo.store, key) >= 3:
            data_key = open_key(repo.store, key, identities, envelopes_from_json(e.envelopes))
            objects.append(replace(e, envelopes=tuple(_sealed(data_key, recipients)), key_ids=ids))
            continue
        how = "rewritten"
        new_name = e.name + REWRITTEN_SUFFIX
        stats, data_key = reencrypt(repo.store, key, prefix + new_name, bind=prefix + new_name, identities=identities,
                                    envelopes=[], plaintext=e.plaintext_digest, level=level,
                                    segment_size=segment_size)
        checkpoint("object-rewritten", backup_id)
        objects.append(replace(e, stored_name=new_name, stored_sha256=stats.stored_sha256,
                               stored_size=stats.stored_size, compression=f"zstd-{level}",
                               envelopes=tuple(_sealed(data_key, recipients)), key_ids=ids))
        superseded.append(key)
    new = replace(m, objects=tuple(objects), key_ids=ids, kem=recipients[0].kem,
                  manifest_version=m.manifest_version + 1, rotated_at=now.isoformat())
    raw = sign_manifest(new, host_key)
    repo.store.put_bytes(prefix + MANIFEST_COPY, raw)
    checkpoint("manifest-copy", backup_id)
    repo.store.put_bytes(prefix + MANIFEST, raw)  # the commit point
    check = repo.load_manifest(backup_id)
    if not check.signature_ok or check.manifest.manifest_version != new.manifest_version:
        raise IntegrityError(f"backup {backup_id}: the new manifest version does not read back")
    checkpoint("committed", backup_id)
    for key in superseded + leftovers:
        repo.store.delete(key)
    return how


# -- WAL files and log archives: the index entry ----------------------------------------------


def _put_json(store: ObjectStore, key: str, doc: dict) -> None:
    store.put_bytes(key, json.dumps(doc).encode())


def _stored_sha(store: ObjectStore, key: str) -> str:
    h = hashlib.sha256()
    with store.open_reader(key) as body:
        while chunk := body.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def staged_key(key: str) -> str:
    head, _, name = key.rpartition("/")
    return f"{head}/.rotate-{name}"


def reseal_indexed(store: ObjectStore, key: str, *, identities: list[Identity], recipients: list[Recipient],
                   level: int, segment_size: int, checkpoint: Checkpoint = _noop) -> str:
    """One WAL file or log archive (``key`` and its index entry ``key.json``)."""
    index_key = key + ".json"
    raw = store.get_bytes(index_key)
    entry = json.loads(raw)
    ids = [r.key_id for r in recipients]
    obj = entry_object(key, entry)  # the object the entry names (an alternate key for a WAL file)
    pending = entry.get("rewrite")
    if pending is not None and _stored_sha(store, obj) == pending.get("stored_sha256"):
        _finish_rewrite(store, key, entry, checkpoint)  # interrupted after the swap
        raw = store.get_bytes(index_key)
        entry = json.loads(raw)
        if set(entry.get("key_ids", ())) == set(ids):
            return "rewritten"
    elif pending is not None:
        entry = {k: v for k, v in entry.items() if k != "rewrite"}  # interrupted before it: start again
    if entry.get("envelopes"):
        data_key = open_key(store, obj, identities, envelopes_from_json(entry["envelopes"]))
        new = {**entry, "envelopes": _sealed(data_key, recipients), "key_ids": ids}
        if store.get_bytes(index_key) != raw:
            # Rewritten meanwhile (a log day archived again): not ours to overwrite; a re-run rotates it.
            raise IntegrityError(f"{index_key} changed during the rotation: run the rotation again")
        _put_json(store, index_key, new)
        return "rewrapped"
    staged = staged_key(key)
    stats, data_key = reencrypt(store, obj, staged, bind=obj, identities=identities, envelopes=entry_envelopes(entry),
                                plaintext=recorded_digest(entry.get("plaintext_blake3"), entry.get("plaintext_sha256")),
                                level=level, segment_size=segment_size)
    entry = {**entry, "rewrite": {"stored_sha256": stats.stored_sha256, "stored_size": stats.stored_size,
                                  "envelopes": _sealed(data_key, recipients), "key_ids": ids}}
    _put_json(store, index_key, entry)
    checkpoint("rewrite-recorded", key)
    writer = store.open_writer(obj)
    try:
        with store.open_reader(staged) as body:
            copy_stream(body, writer)
        writer.commit()  # atomic: the old object or the new one, never a mix
    except BaseException:
        writer.abort()
        raise
    checkpoint("object-swapped", key)
    _finish_rewrite(store, key, entry, checkpoint)
    return "rewritten"


def _finish_rewrite(store: ObjectStore, key: str, entry: dict, checkpoint: Checkpoint) -> None:
    new = entry["rewrite"]
    final = {k: v for k, v in entry.items() if k != "rewrite"}
    final.update(stored_sha256=new["stored_sha256"], stored_size=new["stored_size"], envelopes=new["envelopes"],
                 key_ids=new["key_ids"])
    _put_json(store, key + ".json", final)
    checkpoint("entry-final", key)
    try:
        store.delete(staged_key(key))
    except Exception:  # noqa: BLE001 - a leftover staged copy is harmless and removed by a re-run
        pass


# -- file sets: the run's data-key record -----------------------------------------------------


def reseal_files_record(store: ObjectStore, key: str, *, identities: list[Identity],
                        recipients: list[Recipient]) -> str:
    doc = json.loads(store.get_bytes(key))
    envs = envelopes_from_json(doc.get("envelopes"))
    by_kid = {i.key_id: i for i in identities}
    data_key = None
    for env in envs:
        if env.key_id in by_kid:
            data_key = by_kid[env.key_id].open(env.sealed)
            break
    if data_key is None:
        raise CryptoError(f"{key}: no identity opens this data key (sealed to {', '.join(e.key_id for e in envs)})")
    if data_key_id(data_key) != doc.get("dk"):
        raise IntegrityError(f"{key}: its envelope opens another data key than the record names")
    _put_json(store, key, {**doc, "envelopes": _sealed(data_key, recipients), "key_ids": [r.key_id for r in recipients]})
    return "rewrapped"


def reseal_files_object(store: ObjectStore, key: str, *, identities: list[Identity], recipients: list[Recipient],
                        level: int, segment_size: int) -> str:
    """A format-2 sealed content key (``files/keys/content-<kid>.enc``): nothing records its
    stored bytes, so it is re-encrypted in place — the new data-key record first, then one atomic
    put of the format-3 object (the old object or the new one, each with its envelopes)."""
    from bvh_ops.files.content import save_data_key_record, write_object

    with store.open_reader(key) as body:
        plain = DecryptingReader(body, identities, bind=key).read()
    data_key = os.urandom(32)
    save_data_key_record(store, data_key, seal_data_key(data_key, recipients))
    stats = write_object(store, key, data_key, plain, level=level, segment_size=segment_size)
    _verify(store, key, key, data_key, stats)
    return "rewritten"
