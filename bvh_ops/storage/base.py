"""The ObjectStore protocol. Keys are '/'-separated relative paths; a writer's object becomes
visible only at ``commit()`` (atomic rename locally, CompleteMultipartUpload on S3), and
``abort()`` leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlsplit

from bvh_ops.errors import ConfigError

if TYPE_CHECKING:
    from bvh_ops.config import Settings


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


class ObjectWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class ObjectStore(Protocol):
    url: str

    def open_writer(self, key: str) -> ObjectWriter: ...
    def open_reader(self, key: str) -> BinaryIO: ...
    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def stat(self, key: str) -> ObjectInfo | None: ...
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def delete(self, key: str) -> None: ...
    def check(self) -> None: ...


def open_store(settings: Settings) -> ObjectStore:
    url = settings.require_repository()
    parts = urlsplit(url)
    if parts.scheme == "file":
        from bvh_ops.storage.local import LocalStore

        return LocalStore(parts.path)
    if parts.scheme == "s3":
        from bvh_ops.storage.s3 import S3Store

        return S3Store(
            bucket=parts.netloc,
            prefix=parts.path.strip("/"),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            part_size=settings.s3_part_size_mib << 20,
            sse=None if settings.s3_sse == "none" else settings.s3_sse,
            sse_kms_key_id=settings.s3_sse_kms_key_id,
        )
    raise ConfigError(f"repository {url!r}: unsupported scheme")
