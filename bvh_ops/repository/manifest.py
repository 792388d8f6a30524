"""Manifests: frozen dataclasses serialised to canonical JSON and signed with the host's
Ed25519 key. A backup exists only once its manifest is written (last)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from bvh_ops.errors import IntegrityError
from bvh_ops.keys import HostKey, host_key_id, verify_signature
from bvh_ops.stream import recorded_digest

MANIFEST_FORMAT = "bvh-ops-manifest-v1"


@dataclass(frozen=True)
class ObjectEntry:
    """One stored object of a backup."""

    name: str  # key relative to backups/<id>/
    plaintext_sha256: str  # sha256 of what the tool produced (before compression)
    plaintext_size: int  # bytes the tool produced
    stored_sha256: str  # sha256 of the bytes in the repository (verifiable without keys)
    stored_size: int  # bytes in the repository
    key_ids: tuple[str, ...]  # recipients the object's data key is sealed to
    compression: str  # e.g. "zstd-3"
    encryption: str = "AES-256-GCM-STREAM"  # see docs/FORMAT.md
    envelopes: tuple[dict[str, str], ...] = ()  # format 3: the data key sealed to each recipient
    stored_name: str = ""  # where the object is stored when not at ``name`` (rewritten by a key rotation)
    plaintext_blake3: str = ""  # BLAKE3 of the plaintext instead of plaintext_sha256 (backups since 2026-11-29)

    @property
    def plaintext_digest(self) -> tuple[str, str]:
        """(algorithm, hex) the plaintext is checked against: ("blake3", …) where the entry has
        one, else ("sha256", …) (older backups, and objects other than backups' own)."""
        return recorded_digest(self.plaintext_blake3, self.plaintext_sha256)

    @property
    def stored(self) -> str:
        """The object's key relative to backups/<id>/."""
        return self.stored_name or self.name


@dataclass(frozen=True)
class TableStat:
    """Row count and order-independent fingerprint of one table, taken in the dump's snapshot."""

    name: str  # schema-qualified, identifiers quoted as PostgreSQL would (format('%I.%I'))
    rows: int  # row count in the snapshot
    fingerprint: str  # see bvh_ops.pg.fingerprint
    kind: str = "table"  # table | partitioned | matview | large_objects


@dataclass(frozen=True)
class Manifest:
    """Everything needed to trust, restore and compare one backup."""

    backup_id: str  # sortable: <UTC time>-<kind>-<random>
    kind: str  # logical (pg_dump); physical kinds come with WAL archiving
    tool_version: str  # bvh-ops version that wrote it
    started_at: str  # ISO 8601 UTC, before the snapshot was taken
    finished_at: str  # ISO 8601 UTC, after the last object was stored
    database: str  # database name that was dumped
    server_version: str  # PostgreSQL server_version
    server_version_num: int  # PostgreSQL server_version_num
    system_identifier: str  # pg_control_system().system_identifier
    snapshot_id: str  # pg_export_snapshot() the dump and the fingerprints share
    dump_format: str  # custom
    compression: str  # zstd-<level>
    kem: str  # KEM of the data-key envelopes
    key_ids: tuple[str, ...]  # recipients of the data key
    host: str  # host that took the backup
    objects: tuple[ObjectEntry, ...] = ()
    tables: tuple[TableStat, ...] = ()
    parent_id: str | None = None  # prior backup this one depends on (incrementals)
    extra: dict[str, Any] = field(default_factory=dict)  # forward-compatible additions
    manifest_version: int = 1  # 1 at commit; +1 for each key rotation that re-sealed its data key
    rotated_at: str | None = None  # ISO 8601 UTC of the last key rotation, None before any

    @property
    def bytes_in(self) -> int:
        return sum(o.plaintext_size for o in self.objects)

    @property
    def bytes_stored(self) -> int:
        return sum(o.stored_size for o in self.objects)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Manifest:
        doc = dict(doc)
        doc["objects"] = tuple(
            ObjectEntry(**{**o, "key_ids": tuple(o["key_ids"]),
                           "envelopes": tuple(dict(e) for e in o.get("envelopes", ()))})
            for o in doc.get("objects", [])
        )
        doc["tables"] = tuple(TableStat(**t) for t in doc.get("tables", []))
        doc["key_ids"] = tuple(doc.get("key_ids", ()))
        return cls(**doc)


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_manifest(manifest: Manifest, key: HostKey) -> bytes:
    body = manifest.to_dict()
    envelope = {
        "format": MANIFEST_FORMAT,
        "manifest": body,
        "signature": {
            "alg": "ed25519",
            "key_id": key.key_id,
            "public_key": key.public_b64,
            "value": key.sign(canonical(body)),
        },
    }
    return json.dumps(envelope, sort_keys=True, indent=1).encode() + b"\n"


@dataclass(frozen=True)
class LoadedManifest:
    manifest: Manifest
    signature_ok: bool  # signed by a trusted host key and unmodified
    signature_detail: str


def parse_manifest(raw: bytes, trusted_keys: dict[str, str], *, expect_id: str | None = None) -> LoadedManifest:
    """Parse a stored manifest; the signature is checked against ``trusted_keys`` (id -> b64).
    ``expect_id`` is the backup id of the directory it was read from: a manifest that names
    another backup (a directory copied over another) is an integrity failure."""
    try:
        envelope = json.loads(raw)
        if envelope.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {envelope.get('format')!r}")
        body = envelope["manifest"]
        manifest = Manifest.from_dict(body)
        sig = envelope["signature"]
    except Exception as exc:
        raise IntegrityError(f"manifest is unreadable: {exc}") from None
    if expect_id is not None and manifest.backup_id != expect_id:
        raise IntegrityError(f"manifest under backups/{expect_id}/ is that of backup {manifest.backup_id} "
                             "(copied or moved): refusing it")
    kid = sig.get("key_id", "")
    trusted = trusted_keys.get(kid)
    if trusted is None:
        return LoadedManifest(manifest, False, f"signed by untrusted host key {kid or '?'}")
    if host_key_id(trusted) != kid or not verify_signature(trusted, sig.get("value", ""), canonical(body)):
        return LoadedManifest(manifest, False, "signature does not match the manifest (edited?)")
    return LoadedManifest(manifest, True, f"signed by host key {kid}")


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    seconds: float
    repository: str

    def to_json(self) -> dict[str, object]:
        m = self.manifest
        return {
            "backup_id": m.backup_id,
            "kind": m.kind,
            "started_at": m.started_at,
            "finished_at": m.finished_at,
            "bytes_in": m.bytes_in,
            "bytes_stored": m.bytes_stored,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(m.bytes_in / 1e6 / self.seconds, 2) if self.seconds > 0 else None,
            "repository": self.repository,
            "database": m.database,
            "server_version": m.server_version,
            "objects": [o.name for o in m.objects],
            "tables": {t.name: {"rows": t.rows, "fingerprint": t.fingerprint} for t in m.tables},
        }


PHYSICAL_KINDS = ("full", "incremental")
