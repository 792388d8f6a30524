"""Object stores behind one protocol (base: ObjectStore, ObjectInfo, ObjectWriter; it knows no
driver) and the one factory that maps a repository URL to its driver: LocalStore (file://) and
S3Store (any S3 endpoint). Drivers are imported on demand: boto3 costs start-up time."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bvh_ops.errors import ConfigError
from bvh_ops.storage.base import ObjectInfo, ObjectStore, ObjectWriter

if TYPE_CHECKING:
    from bvh_ops.config import Settings


def open_store(settings: Settings) -> ObjectStore:
    url = settings.require_repository()
    parts = urlsplit(url)
    if parts.scheme == "file":
        from bvh_ops.storage.local import LocalStore  # on demand: the lean WAL command starts faster

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
            profile=settings.aws_profile,
        )
    raise ConfigError(f"repository {url!r}: unsupported scheme")


__all__ = ["ObjectInfo", "ObjectStore", "ObjectWriter", "open_store"]
