"""Google Cloud Storage through the official ``google-cloud-storage`` client.

URL: ``gs://[conn_id@]bucket/prefix`` (``gcs://`` too). Objects live at ``prefix/<key>`` in
the bucket; references record ``gs://bucket/prefix/<key>`` (the connection id is not part of
it, so switching connections keeps old references readable).

Credentials, in Airflow: the Google connection the URL names, else ``google_cloud_default``
(``xcomstash.airflow.connections.gcs_client``), read the way the Google provider reads it:
extras ``key_path`` (a service-account JSON file), ``keyfile_dict`` (its contents, a JSON
string or a dict), ``project``, ``scope`` and ``is_anonymous``, also under their older
``extra__google_cloud_platform__*`` names; with none of them, application default credentials
(``google.auth.default()``: Workload Identity, a metadata server, ``gcloud auth``). When
``google_cloud_default`` is not defined at all, application default credentials too. Outside
Airflow (``clients=None``) the client is ``google.cloud.storage.Client()``. An emulator
(fake-gcs-server) is used through ``STORAGE_EMULATOR_HOST``, as google-cloud-storage does, with
anonymous credentials; plain HTTP only to loopback and only with
``[xcomstash] allow_http_endpoints = True``.

What it supports:

- Streamed writes. A value that fits one chunk (``chunk_size``, 8 MiB by default) is held in
  memory and sent as one upload when it is published, so it can be published under any key
  (content addressing: :attr:`PendingObject.cheap_publish`). A larger value becomes a
  resumable upload while it is still being written, one chunk in flight while the next fills,
  so memory is bounded by a few chunks whatever the value's size. GCS creates the object only
  when the last chunk arrives: nothing is visible before publish, and a discard cancels the
  upload session. Such an upload can only be published at the key it was streamed to.
- Conditional create: ``publish(key, if_absent=True)`` sends ``ifGenerationMatch=0`` and GCS
  refuses (412, :class:`ObjectExistsError`) if the object exists.
- Ranged reads (frames fetched in parallel, from any number of threads); the first read fetches
  up to 8 MiB, so small objects arrive in one request. A reader pins the object generation it
  opened: an object overwritten while it is read is reported missing, never mixed.
- head, list (a path prefix, streamed page by page), idempotent delete.
- Every request has a timeout (``timeout``, 60 s) and retries transient failures (429, 5xx,
  dropped connections) for at most ``retry_timeout`` (30 s; ``[xcomstash] gcs_retry_timeout``),
  so an unreachable or hung service gives :class:`StoreUnavailableError` instead of a hung task.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from xcomstash.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreReadError,
    StoreUnavailableError,
)
from xcomstash.stores.base import Capabilities, ObjectInfo, ObjectReader, PendingObject, Store

#: A value up to this size is one upload at publish time; beyond it, the resumable upload's
#: chunk (``[xcomstash] gcs_chunk_size``). Each chunk of a resumable upload is one request and
#: they go one after another, so a larger chunk is faster (Google advises chunks as large as
#: memory allows; the library's own default is 40-100 MiB). 64 MiB: a push holds about three
#: chunks (one filling, one in flight, the client's copy of it). A multiple of 256 KiB (GCS
#: requires it).
CHUNK_SIZE = 64 * 1024 * 1024
CHUNK_MULTIPLE = 256 * 1024
#: The first read fetches this much: small objects arrive whole in one request.
FIRST_READ_BYTES = 8 * 1024 * 1024
#: Threads that send chunks; each upload has at most one chunk in flight (chunks of a
#: resumable upload must arrive in order), so this bounds concurrent uploads, not memory.
UPLOAD_THREADS = 4
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRY_TIMEOUT = 30.0
_CONTENT_TYPE = "application/octet-stream"
#: Server-side trouble worth calling "unavailable" (the client already retried these).
_TRANSIENT = {408, 429, 500, 502, 503, 504}


class _PendingUpload:
    """Bytes streamed towards ``staged_key``: buffered while they fit one chunk, then a
    resumable upload whose last chunk (sent by :meth:`publish`) creates the object."""

    def __init__(self, store: GCSStore, staged_key: str) -> None:
        self._store = store
        self.staged_key = staged_key
        self._buffer = bytearray()
        self._writer: Any = None  # google.cloud.storage.fileio.BlobWriter, once streaming
        self._in_flight: Future[Any] | None = None
        #: Whether ``staged_key`` was free when the upload started (its precondition).
        self._absent_at_start = True
        self._done = False

    @property
    def cheap_publish(self) -> bool:
        return self._writer is None

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StoreError(f"write to {self._store.uri_for(self.staged_key)} after publish or discard")
        view = memoryview(data).cast("B")
        size = view.nbytes
        chunk = self._store.chunk_size
        try:
            while view.nbytes:
                if len(self._buffer) == chunk:  # a full chunk and more to come: stream it
                    self._send_chunk()
                take = min(chunk - len(self._buffer), view.nbytes)
                self._buffer += view[:take]
                view = view[take:]
        except Exception as exc:
            self.discard()
            if isinstance(exc, StoreError) or not _is_client_error(exc):
                raise
            raise self._store._error(exc, self.staged_key, "cannot upload", reading=False) from exc
        return size

    def _send_chunk(self) -> None:
        chunk, self._buffer = self._buffer, bytearray()
        if self._writer is None:
            self._start()
        self._wait()  # one chunk in flight, one filling: memory stays bounded
        self._in_flight = self._store._pool.submit(self._writer.write, chunk)

    def _start(self) -> None:
        """Open the resumable upload. Its precondition is fixed now, before ``publish`` says
        whether it wants ``if_absent``: ``ifGenerationMatch=0`` when the key is free (so a
        conditional publish is atomic, and an object another writer creates meanwhile is not
        silently replaced), none when an object is there to be replaced."""
        store = self._store
        name = store._name(self.staged_key)
        self._absent_at_start = store._bucket.get_blob(name, timeout=store.timeout, retry=store._retry) is None
        condition = {"if_generation_match": 0} if self._absent_at_start else {}
        self._writer = store._bucket.blob(name).open(
            "wb",
            chunk_size=store.chunk_size,
            ignore_flush=True,
            content_type=_CONTENT_TYPE,
            timeout=store.timeout,
            retry=store._retry,
            **condition,
        )

    def _wait(self) -> None:
        future, self._in_flight = self._in_flight, None
        if future is not None:
            future.result()

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        store = self._store
        uri = store.uri_for(key)
        if self._done:
            raise StoreError(f"cannot publish {uri}: the upload was already published or discarded")
        try:
            if self._writer is None:
                store._bucket.blob(store._name(key)).upload_from_string(
                    bytes(self._buffer),
                    content_type=_CONTENT_TYPE,
                    if_generation_match=0 if if_absent else None,
                    timeout=store.timeout,
                    retry=store._retry,
                )
            else:
                self._finish(key, if_absent)
        except Exception as exc:
            self.discard()
            if isinstance(exc, StoreError) or not _is_client_error(exc):
                raise
            if _status(exc) == 412:
                if if_absent:
                    raise ObjectExistsError(f"{uri} already exists") from exc
                raise StoreError(
                    f"cannot publish {uri}: another writer created it while this upload was "
                    "streamed, so it was not replaced"
                ) from exc
            raise store._error(exc, key, "cannot upload", reading=False) from exc
        self._done = True
        self._buffer = bytearray()

    def _finish(self, key: str, if_absent: bool) -> None:
        store = self._store
        if key != self.staged_key:
            raise StoreError(
                f"cannot publish {store.uri_for(key)}: a resumable upload can only be completed "
                f"at its staged key {self.staged_key!r}"
            )
        if if_absent and (
            # An object was there when this upload began (so it carries no precondition): a
            # conditional create at that moment is refused, and so is this one.
            not self._absent_at_start
            # Otherwise the server enforces ifGenerationMatch=0 when the last chunk arrives; asked here
            # too, so a server that ignores it for resumable uploads (fake-gcs-server) refuses
            # as well, and a refused upload does not send its last chunk first.
            or store._bucket.get_blob(store._name(key), timeout=store.timeout, retry=store._retry) is not None
        ):
            raise ObjectExistsError(f"{store.uri_for(key)} already exists")
        self._wait()
        if self._buffer:
            self._writer.write(self._buffer)
        self._writer.close()  # sends the last chunk: the object appears now

    def discard(self) -> None:
        """Drop the buffer and cancel the upload session (best effort: a session nobody
        finishes expires on its own and never becomes an object)."""
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        try:
            self._wait()
        except Exception:
            pass
        if self._writer is not None:
            try:
                self._writer.terminate()
            except Exception:
                pass


class GCSReader:
    """Ranged GETs of one object generation; the first one also fetches small objects whole.

    Safe to share between threads: each read builds its own request (a ``Blob`` is cheap and
    holds per-request state), and the generation pinned at open never changes.
    """

    def __init__(self, store: GCSStore, key: str) -> None:
        self._store, self._key = store, key
        self._name = store._name(key)
        blob = store._bucket.blob(self._name)
        try:
            self._first = blob.download_as_bytes(
                start=0, end=FIRST_READ_BYTES - 1, raw_download=True, checksum=None,
                timeout=store.timeout, retry=store._retry,
            )
            generation = blob.generation
        except Exception as exc:
            if _status(exc) != 416:  # a zero-byte object cannot satisfy any range
                raise
            self._first, generation = b"", None
        if generation is not None and len(self._first) < FIRST_READ_BYTES and self._first:
            self.generation, self.size = generation, len(self._first)
            return
        # An empty object, one larger than the first read, or no generation reported: ask
        # for the size (of the generation read, when known).
        info = store._bucket.get_blob(self._name, generation=generation, timeout=store.timeout, retry=store._retry)
        if info is None:
            raise _replaced(store, key, generation)
        self.generation, self.size = info.generation, int(info.size or 0)
        if generation is None and self._first:  # the first bytes may be of another version
            self._first = b""

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if end <= len(self._first):
            return self._first[offset:end]
        store = self._store
        blob = store._bucket.blob(self._name, generation=self.generation)
        try:
            data = blob.download_as_bytes(
                start=offset, end=end - 1, raw_download=True, checksum=None,
                timeout=store.timeout, retry=store._retry,
            )
        except Exception as exc:
            if _status(exc) == 404:
                raise _replaced(store, self._key, self.generation) from exc
            raise store._error(exc, self._key, "cannot read") from exc
        if len(data) != end - offset:
            raise StoreReadError(
                f"short read: asked for {end - offset} bytes at {offset}, got {len(data)}",
                uri=store.uri_for(self._key),
            )
        return data

    def readinto_at(self, offset: int, target: memoryview) -> int:
        data = self.read_at(offset, target.nbytes)
        target[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._first = b""


def _replaced(store: GCSStore, key: str, generation: int | None) -> ObjectMissingError:
    detail = f" (generation {generation} was replaced or deleted while it was read)" if generation else ""
    return ObjectMissingError(f"stored object is missing{detail}", uri=store.uri_for(key))


class GCSStore(Store):
    """Objects under ``prefix`` in a GCS bucket.

    Killed writers leave nothing to reconcile, so :meth:`unfinished_uploads` keeps the default
    (none): a value that fits one chunk was never sent, and a resumable upload session is not
    an object. It cannot be listed (the JSON API has no call for it), readers never see it,
    and GCS expires it a week after it started.
    """

    #: Remote (worth caching), ranged reads, listing, atomic conditional create. Publishing
    #: under another key is cheap only for a value that fits one chunk (a resumable upload
    #: cannot be renamed), so ``cheap_publish`` is False and :attr:`PendingObject.cheap_publish`
    #: tells per object.
    capabilities = Capabilities(
        local=False, ranged_reads=True, listing=True, cheap_publish=False, multipart=True, conditional_create=True
    )

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_timeout: float = DEFAULT_RETRY_TIMEOUT,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        from google.cloud.storage.retry import DEFAULT_RETRY

        if chunk_size <= 0 or chunk_size % CHUNK_MULTIPLE:
            raise ConfigError(f"GCS chunk_size must be a positive multiple of 256 KiB, got {chunk_size}")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.root_uri = f"gs://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        self.chunk_size = chunk_size
        #: google-cloud-storage's own policy (which errors are transient), bounded in time.
        self._retry = DEFAULT_RETRY.with_timeout(retry_timeout)
        self._bucket = client.bucket(bucket)
        self._pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="xcomstash-gcs")
        self._bucket_seen = False

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def endpoint(self) -> str | None:
        return getattr(getattr(self.client, "_connection", None), "API_BASE_URL", None)

    def server_time(self) -> float | None:
        """The ``Date`` header of a GET of the bucket's metadata (name only)."""
        from email.utils import parsedate_to_datetime

        url = f"{self.endpoint() or 'https://storage.googleapis.com'}/storage/v1/b/{self.bucket}?fields=name"
        try:
            response = self.client._http.get(url, timeout=self.timeout)
        except Exception as exc:
            raise StoreUnavailableError(f"{self.root_uri}: cannot ask GCS for its time: {_short(exc)}") from None
        date = response.headers.get("Date")
        return parsedate_to_datetime(date).timestamp() if date else None

    def close(self) -> None:
        """Stop the chunk-upload threads (the client is the caller's: it is left open)."""
        self._pool.shutdown(wait=True)

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        pending = _PendingUpload(self, staged_key)
        try:
            yield pending
        except BaseException as exc:
            pending.discard()
            if isinstance(exc, Exception) and not isinstance(exc, StoreError) and _is_client_error(exc):
                raise self._error(exc, staged_key, "cannot upload", reading=False) from exc
            raise
        pending.discard()  # a no-op once published

    def open_reader(self, key: str) -> ObjectReader:
        try:
            return GCSReader(self, key)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, key, "cannot read") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._bucket.blob(self._name(key)).download_as_bytes(
                raw_download=True, timeout=self.timeout, retry=self._retry
            )
        except Exception as exc:
            raise self._error(exc, key, "cannot read") from exc

    def delete(self, key: str) -> None:
        try:
            self._bucket.delete_blob(self._name(key), timeout=self.timeout, retry=self._retry)
        except Exception as exc:
            error = self._error(exc, key, "cannot delete", reading=False)
            if isinstance(error, ObjectMissingError):
                return
            raise error from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            blob = self._bucket.get_blob(self._name(key), timeout=self.timeout, retry=self._retry)
            if blob is None:
                self._check_bucket(key, "cannot stat")
                return None
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc, key, "cannot stat") from exc
        return ObjectInfo(key=key, size=int(blob.size or 0), modified=blob.updated.timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = prefix.strip("/")  # a path prefix, as in LocalStore: "dag" lists dag/..., not dag2/...
        full = self._name(prefix) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            blobs = self.client.list_blobs(
                self.bucket, prefix=full, fields="items(name,size,updated),nextPageToken",
                timeout=self.timeout, retry=self._retry,
            )
            for blob in blobs:
                yield ObjectInfo(
                    key=blob.name[strip:], size=int(blob.size or 0), modified=blob.updated.timestamp()
                )
        except Exception as exc:
            raise self._error(exc, "", "cannot list") from exc

    # ------------------------------------------------------------------ errors

    def _check_bucket(self, key: str, action: str, *, reading: bool = True) -> None:
        """A 404 says "no such object" or "no such bucket": list one name to tell which (a
        missing bucket is a configuration error, not a purged value). Asked once per store."""
        if self._bucket_seen:
            return
        try:
            next(iter(self.client.list_blobs(
                self.bucket, max_results=1, fields="items(name)", timeout=self.timeout, retry=self._retry
            )), None)
        except Exception as exc:
            if _status(exc) == 404:
                uri = self.uri_for(key) if key else self.root_uri
                message = f"{action} object: GCS bucket {self.bucket!r} does not exist"
                raise (StoreReadError(message, uri=uri) if reading else StoreError(f"{message} ({uri})")) from exc
            return  # cannot tell (no permission to list, say): take the object as missing
        self._bucket_seen = True

    def _error(self, exc: Exception, key: str, action: str, *, reading: bool = True) -> StoreError:
        """Our error for what the client raised while working on ``key`` ("" for the root)."""
        if isinstance(exc, StoreError):
            return exc
        uri = self.uri_for(key) if key else self.root_uri
        status = _status(exc)
        if status == 404:
            try:
                self._check_bucket(key, action, reading=reading)
            except StoreError as error:
                return error
            return ObjectMissingError("stored object is missing", uri=uri)
        if type(exc).__module__.startswith("google.auth"):
            return StoreUnavailableError(f"{action} {uri}: GCS credentials failed: {type(exc).__name__}: {exc}")
        if status is None or status in _TRANSIENT:
            return StoreUnavailableError(f"{action} {uri}: GCS unreachable: {type(exc).__name__}: {exc}")
        message = f"{action} object: GCS error {status}: {_short(exc)}"
        return StoreReadError(message, uri=uri) if reading else StoreError(f"{message} ({uri})")


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a client error: ``code`` on google.api_core's exceptions,
    ``response.status_code`` on the upload/download layer's ``InvalidResponse``."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and type(exc).__module__.startswith("google."):
        return code
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _is_client_error(exc: Exception) -> bool:
    """Raised by the client stack (API errors, auth, HTTP transport), told apart from a codec's
    own errors, which must pass through the writer unchanged."""
    return type(exc).__module__.startswith(("google.", "requests", "urllib3", "http.client")) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def _short(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)[:500]


@dataclass(frozen=True)
class ConfiguredGCS:
    """A google-cloud-storage client together with the store options a deployment configured
    (what the Airflow connection builder hands :func:`open_location`)."""

    client: Any
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT
    chunk_size: int = CHUNK_SIZE


def open_location(location: Any, client: Any | None) -> GCSStore:
    """The store a ``gs://`` URL names. ``client``: a ``google.cloud.storage.Client``, a
    :class:`ConfiguredGCS` (client plus store options), or None for ``storage.Client()``
    (application default credentials, or the emulator ``STORAGE_EMULATOR_HOST`` names)."""
    if isinstance(client, ConfiguredGCS):
        return GCSStore(
            client.client, location.bucket, location.prefix,
            retry_timeout=client.retry_timeout, chunk_size=client.chunk_size,
        )
    if client is None:
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage

        try:
            client = storage.Client()
        except DefaultCredentialsError as exc:
            where = location.url or f"gs://{location.bucket}"
            raise ConfigError(f"no Google credentials for {where}: {exc}") from None
    return GCSStore(client, location.bucket, location.prefix)
