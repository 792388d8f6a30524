"""Object stores behind one protocol: LocalStore (file://) and S3Store (any S3 endpoint)."""

from bvh_ops.storage.base import ObjectInfo, ObjectStore, ObjectWriter, open_store

__all__ = ["ObjectInfo", "ObjectStore", "ObjectWriter", "open_store"]
