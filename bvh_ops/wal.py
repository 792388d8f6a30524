"""WAL archiving: `bvh-ops wal-push %p` (archive_command) and `bvh-ops wal-fetch %f %p`
(restore_command). Each WAL file (segment, .history, .backup, .partial) is compressed, encrypted
with its own data key sealed to the recipients, and stored under wal/<timeline>/<name>, with a
small index entry holding its plaintext sha256 so a re-push is recognised without any private
key. Any failure exits non-zero so PostgreSQL keeps the file and retries; an existing name with
different content is refused and never overwritten."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, IntegrityError, NotFound, StorageError
from bvh_ops.keys import load_identities, load_recipients
from bvh_ops.storage import open_store
from bvh_ops.stream import DecryptingReader, EncryptingWriter, seal_data_key

WAL_PREFIX = "wal"
CHUNK = 1 << 20
_NAME = re.compile(r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?$|^[0-9A-F]{8}\.history$")


def wal_key(name: str) -> str:
    """wal/<timeline>/<name>; refuses anything that is not a WAL file name."""
    if not _NAME.match(name):
        raise BvhOpsError(f"{name!r} is not a WAL file name")
    timeline = name[:8]
    return f"{WAL_PREFIX}/{timeline}/{name}"


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def wal_push(settings: Settings, path: str) -> str:
    """Archive one WAL file; returns 'stored' or 'already archived'."""
    staged = wal_upload(settings, path)
    if staged is None:
        return "already archived"
    wal_commit(settings, staged)
    return "stored"


def wal_upload(settings: Settings, path: str) -> dict | None:
    """Store one WAL file's object, without its index entry (so it does not exist for readers
    yet); returns the entry for ``wal_commit``, or None when it is already archived. Uploads may
    run in parallel; commits go in WAL order so the archive never shows a transient gap."""
    src = Path(path)
    if not src.is_file():
        raise NotFound(f"WAL file {path} does not exist")
    key = wal_key(src.name)
    store = open_store(settings)
    plain_sha, size = _sha256_file(src)
    index_key = key + ".json"
    try:
        existing = json.loads(store.get_bytes(index_key))
    except NotFound:
        existing = None
    if existing is not None:
        if existing.get("plaintext_sha256") == plain_sha and store.stat(key) is not None:
            return None
        raise IntegrityError(
            f"{src.name} is already archived with different content: refusing to overwrite "
            "(two clusters archiving into one repository?)")
    recipients = load_recipients(settings.require_recipients())
    data_key = os.urandom(32)
    writer = store.open_writer(key)
    try:
        enc = EncryptingWriter(sink=writer, data_key=data_key, envelopes=seal_data_key(data_key, recipients),
                               compression_level=settings.compression_level,
                               segment_size=settings.segment_size_kib << 10)
        sha = hashlib.sha256()
        with open(src, "rb") as fh:
            while chunk := fh.read(CHUNK):
                sha.update(chunk)
                enc.write(chunk)
        stats = enc.close()
        if sha.hexdigest() != plain_sha:
            raise IntegrityError(f"{src.name} changed while it was being archived")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    entry = {"name": src.name, "plaintext_sha256": plain_sha, "plaintext_size": size,
             "stored_sha256": stats.stored_sha256, "stored_size": stats.stored_size,
             "key_ids": [r.key_id for r in recipients],
             # When PostgreSQL last wrote the file: the newest commit it can hold (for
             # --validate-target with a time and for the continuity report).
             "modified_at": datetime.fromtimestamp(src.stat().st_mtime, UTC).isoformat()}
    if src.name.endswith(".history"):
        # Timeline switch points only (no table data): kept readable so continuity can
        # follow timelines without the restore key.
        entry["history"] = src.read_text(errors="replace")[:65536]
    return entry


def wal_commit(settings: Settings, entry: dict) -> None:
    """Write the index entry of an uploaded WAL file: the commit point. ``if_absent`` closes the
    race with a second pusher; the same content from it is fine, different content is not."""
    store = open_store(settings)
    index_key = wal_key(entry["name"]) + ".json"
    try:
        store.put_bytes(index_key, json.dumps(entry).encode(), if_absent=True)
    except StorageError as exc:
        if "already exists" not in str(exc):
            raise
        again = json.loads(store.get_bytes(index_key))
        if again.get("plaintext_sha256") != entry["plaintext_sha256"]:
            raise IntegrityError(f"{entry['name']} was archived concurrently with different content") from None


def wal_fetch(settings: Settings, name: str, dest: str) -> None:
    """Restore one WAL file to ``dest`` (written aside, then renamed); NotFound when absent,
    which restore_command reports to PostgreSQL as "no such file" (exit 1)."""
    key = wal_key(name)
    store = open_store(settings)
    try:
        entry = json.loads(store.get_bytes(key + ".json"))
    except NotFound:
        raise NotFound(f"WAL file {name} is not in the archive") from None
    identities = load_identities(settings.require_identity())
    target = Path(dest)
    tmp = target.with_name(f".{target.name}.bvh-tmp")
    sha = hashlib.sha256()
    body = store.open_reader(key)
    try:
        reader = DecryptingReader(body, identities)
        with open(tmp, "wb") as out:
            while chunk := reader.read(CHUNK):
                sha.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha.hexdigest() != entry["plaintext_sha256"]:
            raise IntegrityError(f"WAL file {name}: plaintext sha256 differs from the archive index")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        body.close()
