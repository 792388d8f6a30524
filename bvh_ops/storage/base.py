"""The ObjectStore protocol. Keys are '/'-separated relative paths; a writer's object becomes
visible only at ``commit()`` (atomic rename locally, CompleteMultipartUpload on S3), and
``abort()`` leaves nothing behind. With ``if_absent`` the commit (of a writer or of
``put_bytes``) never replaces an existing object, even in a race: it raises AlreadyExists.

Optional capabilities (not part of the protocol, looked up with ``getattr``): a store that can
copy server-side from another store has ``can_copy_from(source) -> bool`` and
``copy_from(source, key, size)`` (S3Store: CopyObject / UploadPartCopy on one endpoint); a store
whose interrupted uploads leave something behind lists them with ``uploads() -> Iterator[Upload]``
and removes one with ``discard_upload(upload)`` (LocalStore: hidden ``.tmp-`` files; S3Store:
multipart uploads never completed nor aborted)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class Upload:
    """An upload under way or abandoned: ``key`` it would commit to, ``handle`` naming it to the
    store, ``bytes`` written so far (0 where the store does not say), and ``since``: its last
    write (file://: the file's mtime; S3: its newest part, else its start)."""
    key: str
    handle: str
    bytes: int
    since: datetime


def uploads(store: ObjectStore) -> Iterator[Upload]:
    fn = getattr(store, "uploads", None)
    return iter(fn()) if fn is not None else iter(())


class ObjectWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class ObjectStore(Protocol):
    url: str

    def open_writer(self, key: str, *, if_absent: bool = False) -> ObjectWriter: ...
    def open_reader(self, key: str) -> BinaryIO: ...
    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def stat(self, key: str) -> ObjectInfo | None: ...
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def delete(self, key: str) -> None: ...
    def check(self) -> None: ...


def retained_until(store: ObjectStore, key: str) -> datetime | None:
    """The object's retain-until where the driver knows locks (S3 Object Lock), else None."""
    fn = getattr(store, "retained_until", None)
    return fn(key) if fn is not None else None


def lock_enabled(store: ObjectStore) -> bool:
    """Whether the store can lock objects against deletion (S3 with Object Lock enabled)."""
    fn = getattr(store, "lock_enabled", None)
    return bool(fn()) if fn is not None else False
