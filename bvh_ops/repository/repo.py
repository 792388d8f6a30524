"""Repository layout, atomic backup commit and the catalog.

    backups/<id>/inprogress.json   written first: host, pid, start; removed at commit
    backups/<id>/<objects>         encrypted, compressed
    backups/<id>/manifest.json     written LAST (+ manifest.json.copy): the commit point

A backup without a manifest does not exist for readers; a later run removes it once its
writer is known dead (same host) or it is older than the grace period.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import psutil

from bvh_ops.errors import IntegrityError, NotFound, StorageError
from bvh_ops.keys import HostKey
from bvh_ops.repository.manifest import LoadedManifest, Manifest, parse_manifest, sign_manifest
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import EncryptingWriter, Envelope, StreamStats, envelopes_json

log = logging.getLogger("bvh_ops.repository")

BACKUPS = "backups"
MANIFEST = "manifest.json"
MANIFEST_COPY = "manifest.json.copy"
MARKER = "inprogress.json"


def new_backup_id(kind: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{kind}-{secrets.token_hex(3)}"


def backup_prefix(backup_id: str) -> str:
    return f"{BACKUPS}/{backup_id}/"


def object_key(backup_id: str, entry) -> str:
    """The repository key of a manifest's object entry (its stored name)."""
    return backup_prefix(backup_id) + entry.stored


@dataclass(frozen=True)
class BackupRecord:
    """What the catalog knows of one backup without reading its objects."""

    backup_id: str
    kind: str
    status: str  # complete | incomplete
    finished_at: datetime | None
    started_at: datetime | None
    parent_id: str | None = None
    bytes_stored: int = 0
    signature_ok: bool | None = None
    writer_host: str | None = None
    writer_pid: int | None = None
    last_modified: datetime | None = None
    klass: str = "regular"  # the manifest's extra["class"]: regular | monthly-archive


def _iso(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts) if ts else None


class Repository:
    def __init__(self, store: ObjectStore, trusted_keys: dict[str, str] | None = None) -> None:
        self.store = store
        self.trusted_keys = dict(trusted_keys or {})

    # -- writing -----------------------------------------------------------------------

    def begin(self, backup_id: str) -> BackupWriter:
        marker = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": datetime.now(UTC).isoformat()}
        self.store.put_bytes(backup_prefix(backup_id) + MARKER, json.dumps(marker).encode())
        return BackupWriter(self, backup_id)

    def delete_backup(self, backup_id: str) -> int:
        """Delete every object of a backup, manifest first (so it stops existing at once)."""
        prefix = backup_prefix(backup_id)
        keys = [o.key for o in self.store.list(prefix)]
        keys.sort(key=lambda k: (not k.endswith((MANIFEST, MANIFEST_COPY)), k))
        for key in keys:
            self.store.delete(key)
        if keys:
            log.info("deleted backup %s (%d objects)", backup_id, len(keys))
        return len(keys)

    # -- reading -----------------------------------------------------------------------

    def load_manifest(self, backup_id: str) -> LoadedManifest:
        prefix = backup_prefix(backup_id)
        errors = []
        untrusted = None
        for name in (MANIFEST, MANIFEST_COPY):
            try:
                loaded = parse_manifest(self.store.get_bytes(prefix + name), self.trusted_keys, expect_id=backup_id)
            except NotFound:
                errors.append(f"{name} missing")
                continue
            except IntegrityError as exc:
                errors.append(f"{name}: {exc}")
                continue
            if loaded.signature_ok:
                return loaded  # the main manifest, or its copy when the main one was damaged or edited
            untrusted = untrusted or loaded
        if untrusted is not None:
            return untrusted
        if not any(self.store.list(prefix)):
            raise NotFound(f"backup {backup_id} not found in {self.store.url}: see `bvh-ops backups list`")
        raise IntegrityError(f"backup {backup_id} has no readable manifest ({'; '.join(errors)})")

    def trusted_manifest(self, backup_id: str, *, purpose: str = "restore", kind: str | None = None) -> Manifest:
        """The manifest of ``backup_id`` (or 'latest' — of ``kind`` when given), refusing one
        whose signature fails."""
        backup_id = self.resolve(backup_id, kind)
        loaded = self.load_manifest(backup_id)
        if not loaded.signature_ok:
            raise IntegrityError(
                f"backup {backup_id}: manifest {loaded.signature_detail}; refusing to {purpose} from it")
        return loaded.manifest

    def list_backups(self) -> list[BackupRecord]:
        groups: dict[str, list] = {}
        for info in self.store.list(BACKUPS + "/"):
            parts = info.key.split("/")
            if len(parts) < 3:
                continue
            groups.setdefault(parts[1], []).append(info)
        records = []
        for backup_id, infos in sorted(groups.items()):
            names = {i.key.split("/", 2)[2]: i for i in infos}
            newest = max(i.modified for i in infos)
            if MANIFEST in names or MANIFEST_COPY in names:
                try:
                    loaded = self.load_manifest(backup_id)
                except IntegrityError:
                    records.append(BackupRecord(backup_id, "?", "damaged", None, None, last_modified=newest))
                    continue
                m = loaded.manifest
                records.append(
                    BackupRecord(
                        backup_id, m.kind, "complete", _iso(m.finished_at), _iso(m.started_at),
                        m.parent_id, m.bytes_stored, loaded.signature_ok, last_modified=newest,
                        klass=str(m.extra.get("class") or "regular"),
                    )
                )
            else:
                host = pid = None
                started = None
                if MARKER in names:
                    try:
                        marker = json.loads(self.store.get_bytes(backup_prefix(backup_id) + MARKER))
                        host, pid, started = marker.get("host"), marker.get("pid"), _iso(marker.get("started_at"))
                    except (NotFound, ValueError, StorageError):
                        pass
                kind = backup_id.split("-")[1] if backup_id.count("-") >= 2 else "?"
                records.append(
                    BackupRecord(backup_id, kind, "incomplete", None, started, None,
                                 sum(i.size for i in infos), None, host, pid, newest)
                )
        return records

    def latest(self, kind: str | None = None) -> BackupRecord:
        """The newest complete backup whose manifest is signed by a trusted key: a forged or
        foreign manifest never becomes 'latest', whatever date it claims."""
        records = [r for r in self.list_backups() if r.status == "complete" and (kind is None or r.kind == kind)]
        complete = [r for r in records if r.signature_ok]
        if not complete:
            what = f"{kind} backup" if kind else "backup"
            untrusted = f" ({len(records)} with an untrusted signature: see `bvh-ops verify --all`)" if records else ""
            raise NotFound(f"no complete {what} with a trusted manifest in {self.store.url}{untrusted}: "
                           "run `bvh-ops backup` first")
        return max(complete, key=lambda r: (r.finished_at, r.backup_id))

    def resolve(self, backup_id: str, kind: str | None = None) -> str:
        """'latest' → the newest complete backup (of ``kind`` when given: a logical restore
        must not pick the newest incremental)."""
        return self.latest(kind).backup_id if backup_id == "latest" else backup_id

    # -- garbage -----------------------------------------------------------------------

    def collect_incomplete(self, now: datetime, grace_hours: float, *, dry_run: bool = False) -> list[str]:
        """Remove backups that never committed: their writer is dead (same host) or they are
        older than the grace period. Returns the ids removed (or that would be)."""
        removed = []
        for rec in self.list_backups():
            if rec.status != "incomplete":
                continue
            if _abandoned(rec, now, grace_hours):
                removed.append(rec.backup_id)
                if not dry_run:
                    log.warning("removing incomplete backup %s (never committed)", rec.backup_id)
                    self.delete_backup(rec.backup_id)
        return removed


def _abandoned(rec: BackupRecord, now: datetime, grace_hours: float) -> bool:
    age_h = (now - (rec.last_modified or now)).total_seconds() / 3600
    if age_h >= grace_hours:
        return True
    if rec.writer_host == socket.gethostname() and rec.writer_pid is not None:
        return rec.writer_pid != os.getpid() and not psutil.pid_exists(rec.writer_pid)
    return False


class BackupWriter:
    """Writes the objects of one backup, then commits it by writing the manifest last."""

    def __init__(self, repo: Repository, backup_id: str) -> None:
        self.repo = repo
        self.backup_id = backup_id
        self.prefix = backup_prefix(backup_id)
        self._committed = False
        self._envelopes: dict[str, list[Envelope]] = {}

    @contextmanager
    def object(
        self,
        name: str,
        *,
        data_key: bytes,
        envelopes: list[Envelope],
        compression_level: int,
        segment_size: int,
        compression_threads: int = 0,
    ) -> Iterator[EncryptingWriter]:
        """Context manager: write plaintext into it; on exit the object is committed and
        ``writer.stats`` is set; on an exception the partial upload is aborted."""
        sink = self.repo.store.open_writer(self.prefix + name)
        try:
            writer = EncryptingWriter(
                sink=sink,
                data_key=data_key,
                envelopes=envelopes,
                compression_level=compression_level,
                segment_size=segment_size,
                compression_threads=compression_threads,
                bind=self.prefix + name,
                plain_hash_alg="blake3",  # a backup's dump or base: the cheaper hash (docs/FORMAT.md)
            )
            self._envelopes[name] = envelopes
            yield writer
            writer.close()
            sink.commit()
        except BaseException:
            sink.abort()
            raise

    def commit(self, manifest: Manifest, host_key: HostKey) -> None:
        # Format 3: each object's envelopes go into the signed manifest, beside its entry.
        manifest = replace(manifest, objects=tuple(
            replace(o, envelopes=tuple(envelopes_json(self._envelopes[o.name])))
            if o.name in self._envelopes and not o.envelopes else o for o in manifest.objects))
        raw = sign_manifest(manifest, host_key)
        # Copy first, then the main manifest: the main one is the commit point.
        self.repo.store.put_bytes(self.prefix + MANIFEST_COPY, raw)
        self.repo.store.put_bytes(self.prefix + MANIFEST, raw)
        self._committed = True
        try:
            self.repo.store.delete(self.prefix + MARKER)
        except StorageError:
            log.warning("could not remove the in-progress marker of %s", self.backup_id)

    def abort(self) -> None:
        """Remove everything this backup wrote (used when anything before commit fails)."""
        self.repo.delete_backup(self.backup_id)


def stats_to_entry(name: str, stats: StreamStats, key_ids: tuple[str, ...], compression: str):
    from bvh_ops.repository.manifest import ObjectEntry

    return ObjectEntry(
        name=name,
        plaintext_sha256=stats.plaintext_sha256,
        plaintext_blake3=stats.plaintext_blake3,
        plaintext_size=stats.plaintext_size,
        stored_sha256=stats.stored_sha256,
        stored_size=stats.stored_size,
        key_ids=key_ids,
        compression=compression,
    )
