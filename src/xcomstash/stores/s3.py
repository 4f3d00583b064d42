"""S3 and S3-compatible object stores (AWS, SeaweedFS, MinIO, ...) through boto3.

The client is handed in, already configured: in Airflow the adapter builds it from an AWS
connection (``aws_default`` or the one named in the store URL), so credentials, endpoint and
region are managed the way Airflow users expect. Writes spool to a local temporary file and
are uploaded on commit (multipart for large objects), so a failed task never publishes a
partial object: S3 makes an object visible only when its upload completes.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator

from xcomstash.errors import ObjectMissingError, StoreError, StoreReadError, StoreUnavailableError
from xcomstash.stores.base import ObjectInfo, Store

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024


class S3Store(Store):
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root_uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def _s3_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
            yield spool  # type: ignore[misc]
            spool.seek(0)
            try:
                self.client.upload_fileobj(spool, self.bucket, self._s3_key(key))
            except Exception as exc:
                raise _translate(exc, self.uri_for(key), "cannot upload") from exc

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
        full = self._s3_key(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
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


def _translate(exc: Exception, uri: str, action: str) -> StoreError:
    """Map botocore's exceptions onto our hierarchy without importing botocore up front."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        if code in _MISSING_CODES:
            return ObjectMissingError("stored object is missing", uri=uri)
        return StoreReadError(f"{action} object: S3 error {code}: {exc}", uri=uri)
    if isinstance(exc, StoreError):
        return exc
    return StoreUnavailableError(f"{action} {uri}: S3 store unreachable: {type(exc).__name__}: {exc}")
