"""s3:// repository: the one module that touches boto3.

Multipart uploads hold one part in memory and are aborted on any failure. ClientError becomes
StorageError at this boundary; throttling, 5xx and connection failures become
TransientStorageError so tasks retry only those.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from botocore.exceptions import ConnectionError as BotoConnectionError

from bvh_ops.errors import AlreadyExists, NotFound, ObjectLocked, StorageError, TransientStorageError
from bvh_ops.storage.base import ObjectInfo, Upload

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html
S3_MIN_PART = 5 << 20
S3_MAX_PART = 5 << 30
S3_MAX_PARTS = 10_000
# https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html: one CopyObject copies at
# most 5 GiB; larger objects are copied part by part with UploadPartCopy.
S3_MAX_COPY = 5 << 30
COPY_PART = 1 << 30
# Part size doubles after this many parts, so a 16 MiB start reaches ~1 TB within 10,000 parts.
PARTS_PER_SIZE_STEP = 2_000

# Stores that do not implement the Object Lock API answer with one of these (MinIO without lock,
# R2, older Ceph): no lock there, as on a bucket without Object Lock.
_NO_LOCK_API = {"NotImplemented", "XNotImplemented", "MethodNotAllowed", "InvalidRequest"}
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503", "500", "Throttling"}


# botocore's loader parses the service models (JSON) once per session: 0.3-0.7 s for every new
# store. One loader (a read-only cache of those files) for the process; each store still gets a
# session of its own (credentials, profile and configuration resolved afresh, as before).
_LOADER_LOCK = threading.Lock()
_LOADER: botocore.loaders.Loader | None = None


def _session(profile: str | None) -> boto3.session.Session:
    global _LOADER
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.loaders.create_loader()
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
        try:
            session = boto3.session.Session(botocore_session=core, profile_name=profile)
            core.get_scoped_config()  # an unknown profile raises here (ProfileNotFound), as before
            return session
        finally:  # boto3 appends its own data directory to the loader's paths on every session
            _LOADER.search_paths[:] = list(dict.fromkeys(_LOADER.search_paths))


def _code(exc: ClientError) -> str:
    """S3's error code of a failed request ("" when the response carries none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception, what: str, bucket: str) -> Exception:
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "NoSuchBucket":
            return StorageError(f"S3 bucket '{bucket}' does not exist: create it or fix BVH_OPS_REPOSITORY")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{what}: not found")
        if code in _TRANSIENT_CODES or status >= 500:
            return TransientStorageError(f"{what}: S3 {code or status} (transient)")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(f"{what}: access denied by S3 ({code}): check the credentials and bucket policy")
        return StorageError(f"{what}: S3 error {code}")
    if isinstance(exc, (EndpointConnectionError, BotoConnectionError)):
        return TransientStorageError(f"{what}: S3 endpoint unreachable ({exc.__class__.__name__})")
    return StorageError(f"{what}: {exc.__class__.__name__}: {exc}")


# The repository's top-level names (docs/FORMAT.md): in a bucket used without a prefix, only
# uploads under these are the repository's.
LAYOUT_TOPS = frozenset({"backups", "wal", "logs", "files", "keys", "fence", "audit"})

_TAKEN_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _taken(exc: ClientError) -> bool:
    """A conditional write (If-None-Match: *) found the key taken (or being taken)."""
    return _code(exc) in _TAKEN_CODES


def _upload_ended(exc: ClientError) -> bool:
    """A multipart upload that is no longer there (completed or aborted by someone else)."""
    return _code(exc) == "NoSuchUpload"


class _S3Writer:
    def __init__(self, store: S3Store, key: str, *, if_absent: bool = False) -> None:
        self._s = store
        self._key = key
        self._cond = {"IfNoneMatch": "*"} if if_absent else {}
        self._buf = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._done = False

    def _part_size(self) -> int:
        step = len(self._parts) // PARTS_PER_SIZE_STEP
        return min(self._s.part_size << step, S3_MAX_PART)

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) >= self._part_size():
            size = self._part_size()
            self._upload(bytes(self._buf[:size]))
            del self._buf[:size]
        return len(data)

    def _upload(self, body: bytes) -> None:
        s = self._s
        try:
            if self._upload_id is None:
                resp = s.client.create_multipart_upload(Bucket=s.bucket, Key=s.full(self._key), **s.sse_args)
                self._upload_id = resp["UploadId"]
            n = len(self._parts) + 1
            if n > S3_MAX_PARTS:
                raise StorageError(f"{self._key}: object exceeds S3's 10,000 parts; raise s3_part_size_mib")
            resp = s.client.upload_part(
                Bucket=s.bucket, Key=s.full(self._key), UploadId=self._upload_id, PartNumber=n, Body=body
            )
            self._parts.append({"PartNumber": n, "ETag": resp["ETag"]})
        except StorageError:
            self.abort()
            raise
        except (ClientError, BotoCoreError) as exc:
            self.abort()
            raise _translate(exc, f"uploading {self._key}", s.bucket) from None

    def commit(self) -> None:
        s = self._s
        try:
            if self._upload_id is None:  # small object: a single PUT
                s.client.put_object(Bucket=s.bucket, Key=s.full(self._key), Body=bytes(self._buf), **s.sse_args,
                                    **self._cond)
            else:
                if self._buf:
                    self._upload(bytes(self._buf))
                s.client.complete_multipart_upload(
                    Bucket=s.bucket,
                    Key=s.full(self._key),
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    **self._cond,
                )
        except ClientError as exc:
            self.abort()
            if self._cond and _taken(exc):
                raise AlreadyExists(f"object {self._key} already exists") from None
            raise _translate(exc, f"committing {self._key}", s.bucket) from None
        except BotoCoreError as exc:
            self.abort()
            raise _translate(exc, f"committing {self._key}", s.bucket) from None
        self._buf.clear()
        self._done = True

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buf.clear()
        if self._upload_id is not None:
            try:
                self._s.client.abort_multipart_upload(
                    Bucket=self._s.bucket, Key=self._s.full(self._key), UploadId=self._upload_id
                )
            except (ClientError, BotoCoreError):
                pass  # its parts stay until the weekly maintenance aborts the upload (uploads(),
                # bvh_ops.maintenance.disk) or a lifecycle rule does


class S3Store:
    """Repository in an S3 bucket under a prefix; works with AWS, MinIO, R2 and moto."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        part_size: int = 16 << 20,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        profile: str | None = None,
    ) -> None:
        if part_size < S3_MIN_PART:
            raise StorageError("S3 part size must be at least 5 MiB")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.profile = profile
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            # boto3 >= 1.36 adds CRC checksums that several S3-compatible stores reject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint_url else {},
        )
        try:
            session = _session(profile)
        except BotoCoreError as exc:  # ProfileNotFound
            raise StorageError(f"AWS profile {profile!r}: {exc}: add it to ~/.aws/credentials or fix "
                               "aws_profile / replica_aws_profile") from None
        self.client = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self._lock_enabled: bool | None = None
        self.sse_args: dict[str, str] = {}
        if sse:
            self.sse_args["ServerSideEncryption"] = sse
            if sse_kms_key_id:
                self.sse_args["SSEKMSKeyId"] = sse_kms_key_id

    def full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageError(
                    f"S3 bucket '{self.bucket}' does not exist: create it or fix BVH_OPS_REPOSITORY"
                ) from None
            raise _translate(exc, f"bucket {self.bucket}", self.bucket) from None
        except BotoCoreError as exc:
            raise _translate(exc, f"bucket {self.bucket}", self.bucket) from None

    def lock_enabled(self) -> bool:
        """Whether the bucket has S3 Object Lock enabled (asked once per store)."""
        if self._lock_enabled is None:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
            except ClientError as exc:
                code = _code(exc)
                if "ObjectLockConfigurationNotFound" in code or code in _NO_LOCK_API:
                    # No lock configured, or an S3-compatible store without the Object Lock API.
                    self._lock_enabled = False
                    return False
                raise _translate(exc, f"bucket {self.bucket}", self.bucket) from None
            except BotoCoreError as exc:
                raise _translate(exc, f"bucket {self.bucket}", self.bucket) from None
            self._lock_enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        return self._lock_enabled

    def retain(self, key: str, until: datetime, mode: str = "COMPLIANCE") -> bool:
        """Object Lock (``mode``: COMPLIANCE or GOVERNANCE) on the object's current version until
        ``until`` where the bucket has Object Lock enabled; False when it has not (nothing set).
        In COMPLIANCE mode nobody, root included, can delete that version before then; in
        GOVERNANCE mode only a principal with s3:BypassGovernanceRetention can."""
        if not self.lock_enabled():
            return False
        try:
            self.client.put_object_retention(Bucket=self.bucket, Key=self.full(key),
                                             Retention={"Mode": mode.upper(), "RetainUntilDate": until})
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"locking {key}", self.bucket) from None
        return True

    def retained_until(self, key: str) -> datetime | None:
        """The retain-until of the object's current version (None: not locked, or no such object)."""
        resp = self._head(key)
        return resp.get("ObjectLockRetainUntilDate") if resp else None

    def can_copy_from(self, source: object) -> bool:
        """Server-side copy works from ``source``: another S3Store on the same endpoint with the
        same credentials (profile), so the provider moves the bytes, not this host."""
        return (isinstance(source, S3Store) and source.endpoint_url == self.endpoint_url
                and source.profile == self.profile)

    def copy_from(self, source: S3Store, key: str, size: int) -> None:
        """Server-side copy of ``source``'s ``key`` to the same key here: CopyObject up to 5 GiB,
        UploadPartCopy in 1 GiB parts above (aborted on any failure)."""
        src = {"Bucket": source.bucket, "Key": source.full(key)}
        dest = {"Bucket": self.bucket, "Key": self.full(key)}
        upload_id = None
        try:
            if size <= S3_MAX_COPY:
                self.client.copy_object(CopySource=src, **dest, **self.sse_args)
                return
            upload_id = self.client.create_multipart_upload(**dest, **self.sse_args)["UploadId"]
            parts = []
            for n, start in enumerate(range(0, size, COPY_PART), start=1):
                end = min(start + COPY_PART, size) - 1
                resp = self.client.upload_part_copy(CopySource=src, CopySourceRange=f"bytes={start}-{end}",
                                                    PartNumber=n, UploadId=upload_id, **dest)
                parts.append({"PartNumber": n, "ETag": resp["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(UploadId=upload_id, MultipartUpload={"Parts": parts}, **dest)
        except (ClientError, BotoCoreError) as exc:
            if upload_id is not None:
                try:
                    self.client.abort_multipart_upload(UploadId=upload_id, **dest)
                except (ClientError, BotoCoreError):
                    pass
            raise _translate(exc, f"copying {key} from {source.url}", self.bucket) from None

    def uploads(self) -> Iterator[Upload]:
        """Multipart uploads under the prefix never completed nor aborted: one under way, or
        one a crash cut off (S3 keeps, and bills, its parts until aborted). ``since`` is its
        newest part's upload (its start when it has none), ``bytes`` its parts'."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                              Prefix=self.full(""))
            for page in pages:
                for u in page.get("Uploads", []):
                    if not self.prefix and u["Key"].split("/", 1)[0] not in LAYOUT_TOPS:
                        continue  # a bucket without a prefix may hold another program's uploads
                    # Its last write, as on file://: the newest part (else its start).
                    size, since = 0, u["Initiated"]
                    try:
                        for parts in self.client.get_paginator("list_parts").paginate(
                                Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]):
                            for part in parts.get("Parts", []):
                                size += part["Size"]
                                since = max(since, part["LastModified"])
                    except ClientError as exc:
                        if _upload_ended(exc):  # completed or aborted since the listing: not a leftover
                            continue
                        raise
                    yield Upload(self._rel(u["Key"]), u["UploadId"], size, since)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, "listing multipart uploads", self.bucket) from None

    def discard_upload(self, upload: Upload) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.full(upload.key), UploadId=upload.handle)
        except ClientError as exc:
            if not _upload_ended(exc):  # ended meanwhile: nothing left to abort (as file://'s missing_ok)
                raise _translate(exc, f"aborting the upload of {upload.key}", self.bucket) from None
        except BotoCoreError as exc:
            raise _translate(exc, f"aborting the upload of {upload.key}", self.bucket) from None

    def open_writer(self, key: str, *, if_absent: bool = False) -> _S3Writer:
        return _S3Writer(self, key, if_absent=if_absent)

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.full(key))["Body"]
        except (ClientError, BotoCoreError) as exc:
            err = _translate(exc, f"object {key}", self.bucket)
            if isinstance(err, NotFound):
                raise NotFound(f"object {key} not found in {self.url}") from None
            raise err from None

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.full(key), Body=data, **self.sse_args, **extra)
        except ClientError as exc:
            if if_absent and _taken(exc):
                raise AlreadyExists(f"object {key} already exists") from None
            raise _translate(exc, f"writing {key}", self.bucket) from None
        except BotoCoreError as exc:
            raise _translate(exc, f"writing {key}", self.bucket) from None

    def get_bytes(self, key: str) -> bytes:
        body = self.open_reader(key)
        try:
            return body.read()
        finally:
            body.close()

    def _head(self, key: str) -> dict[str, Any] | None:
        """HeadObject of the current version; None when there is none."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.full(key))
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _translate(exc, f"object {key}", self.bucket) from None
        except BotoCoreError as exc:
            raise _translate(exc, f"object {key}", self.bucket) from None

    def stat(self, key: str) -> ObjectInfo | None:
        resp = self._head(key)
        return ObjectInfo(key, resp["ContentLength"], resp["LastModified"]) if resp else None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.full(prefix)):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(self._rel(obj["Key"]), obj["Size"], obj["LastModified"])
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"listing {prefix}", self.bucket) from None

    def delete(self, key: str) -> None:
        """Delete the object. On an Object Lock bucket a locked object is refused (ObjectLocked):
        a plain DELETE there would "succeed" by adding a delete marker that hides the object
        while its locked version stays - a locked backup must never vanish from listings."""
        if self.lock_enabled():
            until = self.retained_until(key)
            if until is not None and until > datetime.now(UTC):
                raise ObjectLocked(f"{key} is locked (S3 Object Lock) until {until:%Y-%m-%d %H:%M} UTC: "
                                   "it cannot be deleted before then")
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.full(key))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"deleting {key}", self.bucket) from None
