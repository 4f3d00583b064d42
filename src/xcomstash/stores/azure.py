"""Azure Blob Storage (and Azurite) through ``azure-storage-blob``.

URL forms (``store_url``)::

    abfs://[conn_id@]container/prefix        (also abfss://, wasb://, wasbs://, az://)
    abfs://container@account.dfs.core.windows.net/prefix     (adlfs's form, names the account)

The container must exist. Objects are block blobs named ``prefix/<key>``; references record
``abfs://container/prefix/<key>`` (the adlfs form keeps its account in the URI).

Credentials: in Airflow, a ``wasb`` connection (``wasb_default``, or the ``conn_id`` in the URL)
read the way the Azure provider's ``WasbHook`` documents it (see
:func:`xcomstash.airflow.connections.azure_client`): extra ``connection_string``; or login =
account name and password = account key; or extra ``sas_token`` (a full URL or a token) or
``shared_access_key``; host = the account URL (``https://<account>.blob.core.windows.net`` by
default, or an emulator such as ``http://127.0.0.1:10000/devstoreaccount1``, which needs
``[xcomstash] allow_http_endpoints``). Active Directory (``tenant_id``) and managed identities
need ``azure-identity``, which is not a dependency: use one of the forms above. A URL that names
an account must name the connection's account. Outside Airflow the client comes from
``AZURE_STORAGE_CONNECTION_STRING``.

What it supports:

- Streamed writes: the value is cut into blocks (16 MiB) that are staged (``Put Block``) on a
  few threads while it is still being encoded, and committed (``Put Block List``) at publish.
  Memory stays within a few blocks. Nothing is visible before the commit. A value smaller
  than one block is a single ``Put Blob`` at publish, so it may still be published under
  any key (content addressing); a staged value can only be committed at its staged name.
- Conditional create: ``publish(key, if_absent=True)`` sends ``If-None-Match: *``.
- Ranged reads, safe from many threads; the first read fetches 8 MiB (small objects whole) and
  pins the version it saw (its ETag): a concurrent overwrite makes the next read fail
  (``StoreReadError``) instead of mixing two versions.
- Unfinished uploads: a writer killed after staging blocks leaves a blob with uncommitted
  blocks only; :meth:`AzureBlobStore.unfinished_uploads` lists those (``include=uncommittedblobs``)
  and :meth:`~AzureBlobStore.remove_unfinished` drops them. Blocks staged on top of an existing
  object (an overwrite that was killed) cannot be listed that way: they stay invisible and
  Azure drops them at that object's next write or delete, or after 7 days.
- Errors: a missing blob is ``ObjectMissingError``; a connection failure or timeout
  ``StoreUnavailableError``; any other service error ``StoreReadError`` naming the URI and the
  Azure error code. Clients built here (:func:`service_client`) give up on a request after
  60 s without progress and retry it 3 times, after about 3, 5 and 9 s.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, Iterator

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from xcomstash.errors import (
    ConfigError,
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

BLOCK_SIZE = 16 * 1024 * 1024
BLOCKS_IN_FLIGHT = 4
#: The first GET fetches this much: small objects arrive whole in one request.
FIRST_READ_BYTES = 8 * 1024 * 1024
#: Seconds a client built here waits to connect, and for each read of a response.
REQUEST_TIMEOUT_S = 60.0
#: Retries of a failed request (the SDK's default waits 15 s before the first one).
RETRIES = 3
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"

#: Error codes that mean "the blob is not there" (as opposed to the container or the account).
_MISSING_CODES = {"BlobNotFound"}
#: A conditional create found the object: 409 for ``If-None-Match: *``, 412 on some paths.
_EXISTS_CODES = {"BlobAlreadyExists", "ConditionNotMet"}


def client_options(
    *, timeout: float = REQUEST_TIMEOUT_S, retries: int = RETRIES, backoff: float = 1.0
) -> dict[str, Any]:
    """Keyword arguments for ``BlobServiceClient``: per-request timeouts and a short, bounded
    retry, so an unreachable service becomes an error in seconds rather than minutes."""
    from azure.storage.blob import ExponentialRetry

    return {
        "connection_timeout": timeout,
        "read_timeout": timeout,
        "retry_policy": ExponentialRetry(
            initial_backoff=backoff, increment_base=2, retry_total=retries, random_jitter_range=backoff / 2
        ),
    }


def service_client(
    *,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: Any = None,
    **options: Any,
) -> Any:
    """A ``BlobServiceClient`` from a connection string or an account URL (+ credential), with
    :func:`client_options` unless ``options`` override them."""
    from azure.storage.blob import BlobServiceClient

    settings = {**client_options(), **options}
    try:
        if connection_string:
            return BlobServiceClient.from_connection_string(connection_string, **settings)
        return BlobServiceClient(account_url=account_url, credential=credential, **settings)
    except ValueError as exc:  # a malformed connection string or URL
        raise ConfigError(f"invalid Azure Blob Storage settings: {exc}") from None


def check_account(location: Any, account_name: str | None, source: str) -> None:
    """A URL that names an account (``abfs://c@account.dfs.core.windows.net/p``) must be served
    by a client for that account: anything else would read and write another account."""
    if location.account and (account_name or "").lower() != location.account.lower():
        raise ConfigError(
            f"store URL {location.url or location.account!r} names Azure account {location.account!r} "
            f"but {source} is for account {account_name!r}"
        )


class _BlockWriter:
    """A write-only stream that stages ``block_size`` blocks in the background."""

    def __init__(self, store: AzureBlobStore, blob_name: str) -> None:
        self._store = store
        self._blob = store.container.get_blob_client(blob_name)
        self._buffer = bytearray()
        #: Block ids must be unique among every writer of this blob name and all of one length.
        self._id_prefix = uuid.uuid4().hex
        self._ids: list[str] = []
        self._pending: deque[Future[None]] = deque()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        size, block_size = view.nbytes, self._store.block_size
        while view.nbytes:
            take = min(block_size - len(self._buffer), view.nbytes)
            self._buffer += view[:take]
            view = view[take:]
            if len(self._buffer) == block_size:
                self._send(bytes(self._buffer))
                self._buffer = bytearray()
        return size

    def _send(self, block: bytes) -> None:
        block_id = base64.b64encode(f"{self._id_prefix}{len(self._ids):08d}".encode()).decode()
        self._ids.append(block_id)
        self._pending.append(self._store._pool.submit(self._blob.stage_block, block_id, block))
        while len(self._pending) >= BLOCKS_IN_FLIGHT:
            self._pending.popleft().result()

    @property
    def single_block(self) -> bool:
        """Nothing staged yet: everything written so far fits one ``Put Blob``."""
        return not self._ids

    def commit(self, blob_name: str, *, if_absent: bool = False) -> None:
        """Make the bytes the blob ``blob_name`` (only the staged name once blocks are staged).
        ``if_absent``: the service refuses if a blob of that name exists."""
        condition = {"match_condition": MatchConditions.IfMissing} if if_absent else {}
        if self.single_block:
            self._store.container.get_blob_client(blob_name).upload_blob(
                bytes(self._buffer), overwrite=not if_absent, max_concurrency=1, **condition
            )
            return
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer = bytearray()
        while self._pending:
            self._pending.popleft().result()
        self._blob.commit_block_list(self._ids, **condition)

    def abort(self) -> None:
        """Stop staging and drop what was staged (best effort: ``reconcile`` finds the rest)."""
        for future in self._pending:
            future.cancel()
        wait(self._pending)  # a block still being sent would stage itself after the cleanup
        self._pending.clear()
        self._buffer = bytearray()
        if self._ids:
            try:
                _drop_uncommitted(self._blob)
            except Exception:
                pass


def _drop_uncommitted(blob: Any) -> None:
    """Drop the uncommitted blocks of a blob that has no committed version.

    Azure has no call that deletes uncommitted blocks, but committing a block list drops every
    block it does not name. So: commit an empty list only if no blob exists
    (``If-None-Match: *``, so a blob committed meanwhile is never touched), then delete exactly
    that empty blob (``If-Match`` its ETag). Nothing references it, so no reader can be
    waiting for it. A blob that has a committed version keeps its blocks (Azure drops them).
    """
    try:
        _, uncommitted = blob.get_block_list("uncommitted")
    except ResourceNotFoundError:
        return  # nothing staged there (already removed)
    if not uncommitted:
        return
    try:
        result = blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        return  # committed meanwhile (no longer unfinished), or the container is gone
    try:
        blob.delete_blob(etag=result["etag"], match_condition=MatchConditions.IfNotModified)
    except (ResourceNotFoundError, ResourceModifiedError):
        pass


class _PendingUpload:
    """Bytes streamed towards ``staged_key``: a single ``Put Blob`` to any key while they fit
    one block, else a block list committed at the staged key (Azure cannot move staged
    blocks to another blob), or dropped when the content turns out to be stored already."""

    def __init__(self, store: AzureBlobStore, staged_key: str) -> None:
        self._store = store
        self.staged_key = staged_key
        self._stream = _BlockWriter(store, store._blob_name(staged_key))
        self._done = False

    @property
    def cheap_publish(self) -> bool:
        return self._stream.single_block

    def write(self, data: bytes | memoryview) -> int:
        return self._stream.write(data)

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        store = self._store
        if not self._stream.single_block and key != self.staged_key:
            self.discard()
            raise StoreError(
                f"cannot publish {store.uri_for(key)}: staged Azure blocks can only be committed "
                f"at their staged key {self.staged_key!r}"
            )
        try:
            self._stream.commit(store._blob_name(key), if_absent=if_absent)
        except Exception as exc:
            self.discard()
            if isinstance(exc, StoreError) or not _is_azure_error(exc):
                raise
            if if_absent and _error_code(exc) in _EXISTS_CODES:
                raise ObjectExistsError(f"{store.uri_for(key)} already exists") from exc
            if _error_code(exc) == "InvalidBlockList":
                raise StoreReadError(
                    "cannot upload object: its staged blocks were dropped (another writer of the "
                    "same key committed or discarded while this one was writing)",
                    uri=store.uri_for(key),
                ) from exc
            raise _translate(exc, store.uri_for(key), "cannot upload") from exc
        self._done = True

    def discard(self) -> None:
        if not self._done:
            self._done = True
            self._stream.abort()


class _ViewSink:
    """A write-only stream into a memoryview, so a download lands in the caller's buffer."""

    def __init__(self, target: memoryview) -> None:
        self._target, self.written = target, 0

    def write(self, data: bytes) -> int:
        n = min(len(data), self._target.nbytes - self.written)
        self._target[self.written : self.written + n] = data[:n]
        self.written += n
        return len(data)


class AzureReader:
    """Ranged downloads of one version of a blob: the first also fetches small blobs whole and
    records the ETag every later range must match."""

    def __init__(self, store: AzureBlobStore, key: str) -> None:
        self._store, self._key = store, key
        self._blob = store.container.get_blob_client(store._blob_name(key))
        try:
            download = self._blob.download_blob(offset=0, length=FIRST_READ_BYTES, max_concurrency=1)
        except HttpResponseError as exc:
            if _error_code(exc) != "InvalidRange":  # a zero-byte blob cannot satisfy any range
                raise
            properties = self._blob.get_blob_properties()
            if properties.size:  # replaced by a non-empty blob in between: start over
                download = self._blob.download_blob(offset=0, length=FIRST_READ_BYTES, max_concurrency=1)
            else:
                self._first, self.size, self._etag = b"", 0, properties.etag
                return
        self._etag = download.properties.etag
        # A ranged download reports the range's length as its size; the blob's is after the "/".
        self.size = int(download.properties.content_range.rsplit("/", 1)[1])
        self._first = download.readall()

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= len(self._first):
            return self._first[offset:end]
        if offset >= end:
            return b""
        return self._download(offset, end - offset)

    def readinto_at(self, offset: int, target: memoryview) -> int:
        end = min(offset + target.nbytes, self.size)
        if end <= len(self._first) or offset >= end:
            data = self.read_at(offset, target.nbytes)
            target[: len(data)] = data
            return len(data)
        sink = _ViewSink(target.cast("B"))
        self._download(offset, end - offset, sink)
        return sink.written

    def _download(self, offset: int, length: int, sink: _ViewSink | None = None) -> bytes:
        """The range, into ``sink`` if given; only from the version seen on open (a large
        range arrives in several requests, each under the same condition)."""
        uri = self._store.uri_for(self._key)
        try:
            download = self._blob.download_blob(
                offset=offset,
                length=length,
                etag=self._etag,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
            if sink is not None:
                download.readinto(sink)
                return b""
            return download.readall()
        except ResourceModifiedError as exc:
            raise StoreReadError("object changed while it was being read", uri=uri) from exc
        except Exception as exc:
            raise _translate(exc, uri, "cannot read") from exc

    def close(self) -> None:
        self._first = b""


class AzureBlobStore(Store):
    #: Remote (worth caching), ranged reads, listing, conditional create. Publishing under
    #: another key is cheap only for a value that fits one block (see :class:`_PendingUpload`).
    capabilities = Capabilities(
        local=False, ranged_reads=True, listing=True, cheap_publish=False, multipart=True, conditional_create=True
    )

    def __init__(
        self, container_client: Any, prefix: str = "", *, account: str = "", block_size: int = BLOCK_SIZE
    ) -> None:
        """``account``: the account as the store URL named it (adlfs form), kept in the URIs.
        ``block_size``: the size of staged blocks (memory use is a few of them)."""
        self.container = container_client
        self.container_name: str = container_client.container_name
        self.prefix = prefix.strip("/")
        self.block_size = block_size
        self._pool = ThreadPoolExecutor(max_workers=BLOCKS_IN_FLIGHT, thread_name_prefix="xcomstash-azure")
        host = f"{self.container_name}@{account}.dfs.core.windows.net" if account else self.container_name
        self.root_uri = f"abfs://{host}" + (f"/{self.prefix}" if self.prefix else "")

    def _blob_name(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def endpoint(self) -> str | None:
        return str(self.container.url).split("?", 1)[0]  # never a SAS token

    def server_time(self) -> float | None:
        """The ``Date`` header of a request for the container's properties."""
        from email.utils import parsedate_to_datetime

        dates: list[str] = []

        def keep_date(response: Any) -> None:
            date = response.http_response.headers.get("Date")
            if date:
                dates.append(date)

        try:
            self.container.get_container_properties(raw_response_hook=keep_date)
        except Exception as exc:
            if not _is_azure_error(exc):
                raise
            raise StoreUnavailableError(f"{self.root_uri}: cannot ask Azure for its time: {type(exc).__name__}: {exc}") from None
        return parsedate_to_datetime(dates[-1]).timestamp() if dates else None

    def close(self) -> None:
        """Stop the block-upload threads (the client is the caller's: it is left open)."""
        self._pool.shutdown(wait=True)

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        pending = _PendingUpload(self, staged_key)
        try:
            yield pending
        except BaseException as exc:
            pending.discard()
            if isinstance(exc, Exception) and not isinstance(exc, StoreError) and _is_azure_error(exc):
                raise _translate(exc, self.uri_for(staged_key), "cannot upload") from exc
            raise
        pending.discard()  # a no-op once published

    def open_reader(self, key: str) -> ObjectReader:
        try:
            return AzureReader(self, key)
        except Exception as exc:
            raise _translate(exc, self.uri_for(key), "cannot read") from exc

    def get(self, key: str) -> bytes:
        try:
            return self.container.get_blob_client(self._blob_name(key)).download_blob(max_concurrency=1).readall()
        except Exception as exc:
            raise _translate(exc, self.uri_for(key), "cannot read") from exc

    def delete(self, key: str) -> None:
        try:
            self.container.get_blob_client(self._blob_name(key)).delete_blob(delete_snapshots="include")
        except Exception as exc:
            error = _translate(exc, self.uri_for(key), "cannot delete")
            if isinstance(error, ObjectMissingError):
                return
            raise error from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            properties = self.container.get_blob_client(self._blob_name(key)).get_blob_properties()
        except Exception as exc:
            error = _translate(exc, self.uri_for(key), "cannot stat")
            if isinstance(error, ObjectMissingError):
                return None
            raise error from exc
        return ObjectInfo(key=key, size=int(properties.size), modified=properties.last_modified.timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        prefix = prefix.strip("/")  # a path prefix, as in LocalStore: "dag" lists dag/..., not dag2/...
        full = self._blob_name(prefix) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            for item in self.container.list_blobs(name_starts_with=full or None):
                yield ObjectInfo(
                    key=item.name[strip:], size=int(item.size), modified=item.last_modified.timestamp()
                )
        except Exception as exc:
            raise _translate(exc, self.root_uri, "cannot list") from exc

    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        """Blobs under the prefix that have staged blocks and no committed version (a writer
        killed after staging). The service lists them only among all blobs
        (``include=uncommittedblobs``), so the committed listing is walked beside it, both in
        the service's name order, and what only the first has is reported."""
        base = self.prefix + "/" if self.prefix else None
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            committed = iter(self.container.list_blobs(name_starts_with=base))
            current = next(committed, None)
            for item in self.container.list_blobs(name_starts_with=base, include=["uncommittedblobs"]):
                while current is not None and current.name < item.name:
                    current = next(committed, None)
                if current is not None and current.name == item.name:
                    continue
                when = item.creation_time or item.last_modified
                yield UnfinishedUpload(
                    key=item.name[strip:],
                    # Without a time (never seen), "now": never old enough to remove a live writer's.
                    started=when.timestamp() if when else time.time(),
                    token=item.name,
                )
        except Exception as exc:
            raise _translate(exc, self.root_uri, "cannot list uploads") from exc

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        """Drop the staged blocks of an unfinished upload; a blob committed since is kept."""
        name = upload.token
        if self.prefix and not name.startswith(self.prefix + "/"):
            raise StoreError(f"not an upload under {self.root_uri}: {name!r}")
        try:
            _drop_uncommitted(self.container.get_blob_client(name))
        except Exception as exc:
            raise _translate(exc, self.root_uri, "cannot remove upload") from exc


def _error_code(exc: Exception) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _is_azure_error(exc: Exception) -> bool:
    """The SDK's errors (service answers, connection failures), told apart from codec errors."""
    return isinstance(exc, (AzureError, ConnectionError, TimeoutError)) or type(exc).__module__.startswith(
        ("azure", "requests", "urllib3")
    )


def _translate(exc: Exception, uri: str, action: str) -> StoreError:
    """Map the SDK's exceptions onto our hierarchy."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, HttpResponseError):
        code = _error_code(exc)
        if code in _MISSING_CODES or (isinstance(exc, ResourceNotFoundError) and not code):
            return ObjectMissingError("stored object is missing", uri=uri)
        text = (exc.message or str(exc)).strip()
        message = text.splitlines()[0] if text else ""
        return StoreReadError(
            f"{action} object: Azure error {exc.status_code} {code or type(exc).__name__}: {message}", uri=uri
        )
    return StoreUnavailableError(f"{action} {uri}: Azure store unreachable: {type(exc).__name__}: {exc}")


def open_location(location: Any, client: Any | None) -> AzureBlobStore:
    """The store an ``abfs://``/``wasb://`` URL names. ``client``: a ``BlobServiceClient``;
    ``None`` builds one from ``AZURE_STORAGE_CONNECTION_STRING``."""
    if client is None:
        connection_string = os.environ.get(CONNECTION_STRING_ENV)
        if not connection_string:
            raise ConfigError(
                f"Azure store URL {location.url!r} needs credentials: set {CONNECTION_STRING_ENV} "
                "(outside Airflow), or in Airflow a wasb connection (wasb_default, or the one named "
                "in abfs://conn_id@container/prefix) with a connection_string, an account name and "
                "key, or a SAS token"
            )
        client = service_client(connection_string=connection_string)
        check_account(location, getattr(client, "account_name", None), f"${CONNECTION_STRING_ENV}")
    else:
        check_account(location, getattr(client, "account_name", None), "the client given")
    return AzureBlobStore(client.get_container_client(location.bucket), location.prefix, account=location.account)
