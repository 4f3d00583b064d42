"""S3 and S3-compatible object stores (AWS, SeaweedFS, MinIO, ...) through boto3.

The client is handed in, already configured: in Airflow the adapter builds it from an AWS
connection (``aws_default`` or the one named in the store URL), so credentials, endpoint and
region are managed the way Airflow users expect.

Writes stream: parts are uploaded on a few threads while the value is still being encoded
(multipart upload), and only the last part waits. S3 makes an object visible only when its
upload completes, so a failed task never publishes a partial object; a failed upload is
aborted. Reads are ranged GETs, so frames can be fetched in parallel.
"""

from __future__ import annotations

import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator

from xcomstash.errors import (
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreReadError,
    StoreUnavailableError,
)
from xcomstash.stores.base import (
    Capabilities,
    ObjectInfo,
    ObjectReader,
    PendingObject,
    Store,
    UnfinishedUpload,
)

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
#: A conditional create found the object (If-None-Match: *); 409 when another conditional
#: write of the same key is in flight.
_EXISTS_CODES = {"412", "PreconditionFailed", "ConditionalRequestConflict"}
PART_SIZE = 16 * 1024 * 1024
PARTS_IN_FLIGHT = 4
#: The first GET fetches this much: small objects arrive whole in one request.
FIRST_READ_BYTES = 8 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"bytes \d+-\d+/(\d+)")


class _MultipartWriter:
    """A write-only stream that uploads ``PART_SIZE`` parts in the background."""

    def __init__(self, client: Any, bucket: str, key: str, pool: ThreadPoolExecutor) -> None:
        self._client, self._bucket, self._key, self._pool = client, bucket, key, pool
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._pending: deque[Future[dict[str, Any]]] = deque()
        self._parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        while len(self._buffer) >= PART_SIZE:
            part = bytes(self._buffer[:PART_SIZE])
            del self._buffer[:PART_SIZE]
            self._send(part)
        return view.nbytes

    def _send(self, part: bytes) -> None:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + len(self._pending) + 1
        self._pending.append(self._pool.submit(self._upload_part, number, part))
        while len(self._pending) >= PARTS_IN_FLIGHT:
            self._parts.append(self._pending.popleft().result())

    def _upload_part(self, number: int, part: bytes) -> dict[str, Any]:
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=part
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    @property
    def single_part(self) -> bool:
        """Nothing uploaded yet: everything written so far fits one PUT."""
        return self._upload_id is None

    def commit(self, key: str | None = None, *, if_absent: bool = False) -> None:
        """Finish the upload; a single-part object may still be sent to another ``key``.
        ``if_absent``: the service refuses (412) if the object exists."""
        condition = {"IfNoneMatch": "*"} if if_absent else {}
        if self._upload_id is None:
            self._client.put_object(
                Bucket=self._bucket, Key=key or self._key, Body=bytes(self._buffer), **condition
            )
            return
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()
        while self._pending:
            self._parts.append(self._pending.popleft().result())
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
            **condition,
        )

    def abort(self) -> None:
        for future in self._pending:
            future.cancel()
        if self._upload_id is not None:
            try:
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )
            except Exception:  # best effort: lifecycle rules / reconcile clean the rest
                pass


class _PendingUpload:
    """Bytes streamed towards ``staged_key``. A value that fits one part is sent as a single
    PUT to whatever key it is published under; a multipart upload can only be completed at its
    staged key (S3 cannot rename), or aborted when the content turns out to be stored already."""

    def __init__(self, store: S3Store, staged_key: str) -> None:
        self._store = store
        self.staged_key = staged_key
        self._stream = _MultipartWriter(store.client, store.bucket, store._s3_key(staged_key), store._pool)
        self._done = False

    @property
    def cheap_publish(self) -> bool:
        return self._stream.single_part

    def write(self, data: bytes | memoryview) -> int:
        return self._stream.write(data)

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        store = self._store
        if not self._stream.single_part and key != self.staged_key:
            self.discard()
            raise StoreError(
                f"cannot publish {store.uri_for(key)}: a multipart upload can only be completed "
                f"at its staged key {self.staged_key!r}"
            )
        try:
            self._stream.commit(key=store._s3_key(key), if_absent=if_absent)
        except Exception as exc:
            self.discard()
            if isinstance(exc, StoreError) or not _is_s3_error(exc):
                raise
            if _error_code(exc) in _EXISTS_CODES:
                raise ObjectExistsError(f"{store.uri_for(key)} already exists") from exc
            raise _translate(exc, store.uri_for(key), "cannot upload") from exc
        self._done = True

    def discard(self) -> None:
        if not self._done:
            self._done = True
            self._stream.abort()


class S3Reader:
    """Ranged GETs; the first one also fetches small objects whole."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store, self._key = store, key
        self._s3_key = store._s3_key(key)
        try:
            response = store.client.get_object(
                Bucket=store.bucket, Key=self._s3_key, Range=f"bytes=0-{FIRST_READ_BYTES - 1}"
            )
        except Exception as exc:  # a zero-byte object cannot satisfy any range
            if getattr(exc, "response", {}).get("Error", {}).get("Code") != "InvalidRange":
                raise
            self._first, self.size = b"", 0
            return
        self._first = response["Body"].read()
        match = _CONTENT_RANGE.match(response.get("ContentRange") or "")
        self.size = int(match.group(1)) if match else len(self._first)

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= len(self._first):
            return self._first[offset:end]
        if offset >= end:
            return b""
        try:
            response = self._store.client.get_object(
                Bucket=self._store.bucket, Key=self._s3_key, Range=f"bytes={offset}-{end - 1}"
            )
            return response["Body"].read()
        except Exception as exc:
            raise _translate(exc, self._store.uri_for(self._key), "cannot read") from exc

    def readinto_at(self, offset: int, target: memoryview) -> int:
        data = self.read_at(offset, target.nbytes)
        target[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._first = b""


class S3Store(Store):
    #: Remote (worth caching), ranged GETs, listing. Publish under another key is cheap only
    #: for an object that fits one part: a multipart upload cannot be renamed, so
    #: ``cheap_publish`` is False here and :attr:`PendingObject.cheap_publish` tells per object.
    capabilities = Capabilities(
        local=False, ranged_reads=True, listing=True, cheap_publish=False, multipart=True, conditional_create=True
    )

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self._pool = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="xcomstash-s3")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def close(self) -> None:
        """Stop the part-upload threads (the boto3 client is the caller's: it is left open)."""
        self._pool.shutdown(wait=True)

    def endpoint(self) -> str | None:
        return getattr(self.client.meta, "endpoint_url", None)

    def server_time(self) -> float | None:
        """The ``Date`` header of a HEAD of the bucket."""
        from email.utils import parsedate_to_datetime

        try:
            response = self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if not _is_s3_error(exc):
                raise
            raise StoreUnavailableError(f"{self.root_uri}: cannot ask S3 for its time: {type(exc).__name__}: {exc}") from None
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        return parsedate_to_datetime(date).timestamp() if date else None

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        pending = _PendingUpload(self, staged_key)
        try:
            yield pending
        except BaseException as exc:
            pending.discard()
            if isinstance(exc, Exception) and not isinstance(exc, StoreError) and _is_s3_error(exc):
                raise _translate(exc, self.uri_for(staged_key), "cannot upload") from exc
            raise
        pending.discard()  # a no-op once published

    def open_reader(self, key: str) -> ObjectReader:
        try:
            return S3Reader(self, key)
        except Exception as exc:
            raise _translate(exc, self.uri_for(key), "cannot read") from exc

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._s3_key(key))
            return response["Body"].read()
        except Exception as exc:
            raise _translate(exc, self.uri_for(key), "cannot read") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._s3_key(key))
        except Exception as exc:
            error = _translate(exc, self.uri_for(key), "cannot delete")
            if isinstance(error, ObjectMissingError):
                return
            raise error from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._s3_key(key))
        except Exception as exc:
            error = _translate(exc, self.uri_for(key), "cannot stat")
            if isinstance(error, ObjectMissingError):
                return None
            raise error from exc
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            modified=response["LastModified"].timestamp(),
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = prefix.strip("/")  # a path prefix, as in LocalStore: "dag" lists dag/..., not dag2/...
        full = self._s3_key(prefix) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"][strip:],
                        size=int(item["Size"]),
                        modified=item["LastModified"].timestamp(),
                    )
        except Exception as exc:
            raise _translate(exc, self.root_uri, "cannot list") from exc


    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        """Multipart uploads started under the prefix and never completed or aborted (S3 keeps
        their parts, and bills them, until a lifecycle rule or this removes them)."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + "/" if self.prefix else ""):
                for upload in page.get("Uploads", []):
                    yield UnfinishedUpload(
                        key=upload["Key"][strip:],
                        started=upload["Initiated"].timestamp(),
                        token=f"{upload['UploadId']} {upload['Key']}",
                    )
        except Exception as exc:
            raise _translate(exc, self.root_uri, "cannot list uploads") from exc

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        upload_id, _, s3_key = upload.token.partition(" ")
        if not s3_key.startswith(self.prefix + "/" if self.prefix else ""):
            raise StoreError(f"not an upload under {self.root_uri}: {s3_key!r}")
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
        except Exception as exc:
            error = _translate(exc, self.root_uri, "cannot abort upload")
            if isinstance(error, ObjectMissingError) or _error_code(exc) == "NoSuchUpload":
                return
            raise error from exc


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _is_s3_error(exc: Exception) -> bool:
    """botocore's errors (client errors, connection failures), told apart from codec errors."""
    return type(exc).__module__.startswith(("botocore", "urllib3", "boto3")) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


#: S3 error codes that mean the credentials were refused, not that the store is down.
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed",
}


def _translate(exc: Exception, uri: str, action: str) -> StoreError:
    """Map botocore's exceptions onto our hierarchy without importing botocore up front.
    Refused or absent credentials say so (and which); a failed upload is never a read error."""
    response = getattr(exc, "response", None)
    reading = action.startswith("cannot read")
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            return ObjectMissingError("stored object is missing", uri=uri)
        if code in _CREDENTIAL_CODES:
            return StoreUnavailableError(
                f"{action} {uri}: S3 refused the credentials ({code}): check the access key and secret "
                "of the Airflow AWS connection store_url names (aws_default if it names none)"
            )
        if reading:
            return StoreReadError(f"{action} object: S3 error {code}: {exc}", uri=uri)
        return StoreUnavailableError(f"{action} {uri}: S3 error {code}: {exc}")
    if isinstance(exc, StoreError):
        return exc
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
        return StoreUnavailableError(
            f"{action} {uri}: no S3 credentials ({type(exc).__name__}): the Airflow AWS connection "
            "store_url names has no access key, or (when it names none) aws_default is not defined "
            "and boto3 found none in the environment"
        )
    return StoreUnavailableError(f"{action} {uri}: S3 store unreachable: {type(exc).__name__}: {exc}")


def open_location(location: Any, client: Any | None) -> S3Store:
    """The store an ``s3://`` URL names; without a client, boto3's default credential chain."""
    if client is None:
        import boto3

        client = boto3.client("s3")
    return S3Store(client, location.bucket, location.prefix)
