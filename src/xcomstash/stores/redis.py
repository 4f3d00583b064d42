"""Redis as an object store, through redis-py.

**URL**: ``redis://[conn_id@]/prefix`` (``rediss://`` is the same). The URL never names a host:
host, port, credentials and TLS come from the Airflow Redis connection (``redis_default`` if the
URL names none), read the way the Redis provider's ``RedisHook`` reads it: host, port, login
(the ACL user name), password, and in the extra ``db`` (database number), ``ssl`` (bool),
``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``.
TLS (``"ssl": true``) is required unless the host is this machine and ``[xcomstash]
allow_http_endpoints`` is on. Outside Airflow, a store opened without a client connects to
``REDIS_URL`` if set, else ``localhost:6379``. References name objects as
``redis:///prefix/<key>``: never a host or a password.

**Layout** under ``<prefix>/``:

- ``<prefix>/<key>``: the object's *manifest*, a hash (format version, size, chunk size, chunk
  count, upload id, modification time); a value of at most 64 KiB lives inline in it.
- ``<prefix>/!chunks/<upload>/<n>``: a larger value, split over immutable chunk keys of
  ``chunk_size`` bytes (``[xcomstash] redis_chunk_size``, default 4 MiB), named by an upload id
  unique to the writer.
- ``<prefix>/!chunks/<upload>``: the staging marker of an upload not yet published (the key it
  is headed for, when it started, how many chunks it may have written).

**Writes stream**: chunks are sent on a few threads as they fill, so a push holds about four
chunks in memory whatever the value's size. **Publishing is atomic**: one Lua script checks that
every chunk is there, sets the manifest (refusing, with ``if_absent``, when the key exists:
conditional create is atomic here), drops the staging marker and retires the chunks of the
version it replaced. Readers never see half a value: a reader holds the manifest it opened, and
the chunks it names never change; the replaced version's chunks are kept for a grace period
(30 s) so readers that opened it finish reading it, and a reader that is slower than that (or
reads an object deleted meanwhile) gets a :class:`~xcomstash.errors.StoreReadError` (or
:class:`~xcomstash.errors.ObjectMissingError`), never bytes of two versions.

**TTL** (``[xcomstash] redis_ttl`` seconds, default none): set on the manifest and its chunks in
the same script, so they expire together; a reference to an expired value reads as missing.

**Full memory**: Redis refusing a write at ``maxmemory`` (``OOM``) raises
:class:`~xcomstash.errors.StoreFullError` naming the limit, after deleting the chunks already
written; nothing is published. Use ``maxmemory-policy noeviction``: an eviction policy may drop
a chunk of a stored value, which then reads as a :class:`~xcomstash.errors.StoreReadError`.

**Killed writers** leave a staging marker and chunks; :meth:`RedisStore.unfinished_uploads`
lists them (``xcomstash reconcile`` removes those older than its grace period). Ranged reads
fetch only the chunks a range overlaps (``GETRANGE``), from any number of threads.

Supported: standalone Redis 6.0 or later (and compatible servers with Lua scripting, ``SCAN
... TYPE``). Not supported: Redis Cluster (the scripts touch keys of several hash slots).
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, NoReturn

import redis
from redis import exceptions as redis_errors

from xcomstash.errors import (
    ConfigError,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreFullError,
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

__all__ = ["ConfiguredRedis", "RedisStore", "default_client", "open_location"]

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
#: Redis refuses strings above 512 MB (``proto-max-bulk-len``).
MAX_CHUNK_SIZE = 512 * 1024 * 1024
#: Values up to this size live inline in the manifest: one key, one round trip to read.
INLINE_MAX = 64 * 1024
#: Chunks being sent per writer while the next one fills.
CHUNKS_IN_FLIGHT = 3
#: Chunks fetched per pipeline when reading a long range (bounds a read's transient memory).
READ_BATCH = 8
#: How long the chunks of a replaced version stay readable for readers that opened it.
REPLACED_GRACE_S = 30.0
#: A hung server gives an error after this long, not a hang.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
FORMAT_VERSION = b"1"
#: The first key component reserved for chunks and staging markers (engine keys never start
#: with "!": their components are percent-encoded).
CHUNKS = "!chunks"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")

# KEYS: manifest, marker. ARGV: if_absent, size, chunk size, chunk count, upload id, mtime,
# inline data, ttl ms (0: none), chunk key base ("<prefix>/!chunks/"), grace ms.
# Returns 1 published, 0 exists (if_absent), -1 staging marker gone, -2 a chunk missing.
# Only the first write of a script can be refused for memory (Redis checks maxmemory there),
# so the manifest HSET comes before every other write: refused, the script changed nothing.
_PUBLISH = """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[4])
local base = ARGV[9]
if n > 0 then
  if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
  for i = 0, n - 1 do
    if redis.call('EXISTS', base .. ARGV[5] .. '/' .. i) == 0 then return -2 end
  end
end
local old = {false, false}
if redis.call('EXISTS', KEYS[1]) == 1 then
  old = redis.call('HMGET', KEYS[1], 'upload', 'chunks')
end
redis.call('HSET', KEYS[1], 'v', '1', 'size', ARGV[2], 'csize', ARGV[3], 'chunks', ARGV[4],
           'upload', ARGV[5], 'mtime', ARGV[6], 'data', ARGV[7])
local ttl = tonumber(ARGV[8])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  for i = 0, n - 1 do redis.call('PEXPIRE', base .. ARGV[5] .. '/' .. i, ttl) end
else
  redis.call('PERSIST', KEYS[1])
end
if n > 0 then redis.call('DEL', KEYS[2]) end
local old_n = tonumber(old[2]) or 0
if old[1] and old[1] ~= ARGV[5] and old_n > 0 then
  local grace = tonumber(ARGV[10])
  for i = 0, old_n - 1 do
    local key = base .. old[1] .. '/' .. i
    if grace > 0 then
      local left = redis.call('PTTL', key)
      if left == -1 or left > grace then redis.call('PEXPIRE', key, grace) end
    else
      redis.call('DEL', key)
    end
  end
end
return 1
"""

# KEYS: marker, chunk. ARGV: chunk index, bytes. A chunk is only written while its upload's
# marker exists, so removing an unfinished upload cannot race with a late chunk write.
_PUT_CHUNK = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local hi = tonumber(redis.call('HGET', KEYS[1], 'hi')) or 0
local i = tonumber(ARGV[1])
if i + 1 > hi then redis.call('HSET', KEYS[1], 'hi', i + 1) end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

# KEYS: marker. ARGV: this upload's chunk key base ("<prefix>/!chunks/<upload>/").
# Removes an upload that was never published (a published one has no marker any more).
_REMOVE_UPLOAD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local hi = tonumber(redis.call('HGET', KEYS[1], 'hi')) or 0
for i = 0, hi - 1 do redis.call('DEL', ARGV[1] .. i) end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: manifest. ARGV: chunk key base. The manifest and its chunks, at once.
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HMGET', KEYS[1], 'upload', 'chunks')
redis.call('DEL', KEYS[1])
local n = tonumber(old[2]) or 0
for i = 0, n - 1 do redis.call('DEL', ARGV[1] .. old[1] .. '/' .. i) end
return 1
"""


@dataclass(frozen=True)
class ConfiguredRedis:
    """A redis client together with the store options a deployment configured (what the
    Airflow connection builder hands :func:`open_location`)."""

    client: Any
    chunk_size: int = DEFAULT_CHUNK_SIZE
    ttl: float | None = None


@dataclass(frozen=True)
class _Manifest:
    size: int
    chunk_size: int
    chunks: int
    upload: str
    modified: float
    data: bytes


class _PendingChunks:
    """Bytes streamed into chunk keys of a fresh upload id; published by the script above.

    Nothing is written until the first chunk fills: a small value costs one request (the
    publish). The first full chunk writes the staging marker first, so a killed writer's
    chunks are always findable through it.
    """

    def __init__(self, store: RedisStore, staged_key: str) -> None:
        self._store = store
        self.staged_key = staged_key
        self._upload = uuid.uuid4().hex
        self._buffer = bytearray()
        self._size = 0
        self._chunks = 0
        self._pending: deque[Future[None]] = deque()
        self._marker_written = False
        self._done = False

    @property
    def cheap_publish(self) -> bool:
        """Chunks are named by the upload, not the key: any key costs the same."""
        return True

    def write(self, data: bytes | memoryview) -> int:
        if self._done:
            raise StoreError(f"write to a finished Redis upload for {self._store.uri_for(self.staged_key)}")
        view = memoryview(data).cast("B")
        size = self._store.chunk_size
        try:
            position = 0
            while position < view.nbytes:
                take = min(size - len(self._buffer), view.nbytes - position)
                self._buffer += view[position : position + take]
                position += take
                if len(self._buffer) == size:
                    self._send_buffer()
        except BaseException as exc:
            self.discard()
            _reraise(self._store._translate(exc, self.staged_key, "cannot upload", reading=False), exc)
        self._size += view.nbytes
        return view.nbytes

    def _send_buffer(self) -> None:
        """Hand the filled buffer to a sending thread; wait while too many are in flight."""
        store = self._store
        if not self._marker_written:
            store.client.hset(
                store._marker_key(self._upload),
                mapping={"key": self.staged_key, "started": repr(time.time()), "csize": store.chunk_size, "hi": 0},
            )
            self._marker_written = True
        chunk, self._buffer = self._buffer, bytearray()
        index = self._chunks
        self._chunks += 1
        self._pending.append(store._pool.submit(self._put_chunk, index, chunk))
        while len(self._pending) >= CHUNKS_IN_FLIGHT:
            self._pending.popleft().result()

    def _put_chunk(self, index: int, chunk: bytearray) -> None:
        store = self._store
        written = store._put_chunk_script(
            keys=[store._marker_key(self._upload), store._chunk_key(self._upload, index)],
            args=[index, chunk],
        )
        if not written:
            raise StoreError(
                f"upload of {store.uri_for(self.staged_key)} was removed while being written "
                "(reconcile took it for an unfinished upload: is its grace period shorter than a push?)"
            )

    def _drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        store = self._store
        if self._done:
            raise StoreError(f"publish of a finished Redis upload for {store.uri_for(key)}")
        try:
            store._check_key(key)
            self._drain()
            if self._chunks == 0 and len(self._buffer) <= store.inline_max:
                inline, upload = bytes(self._buffer), ""
            else:
                if self._buffer:
                    self._send_buffer()
                    self._drain()
                inline, upload = b"", self._upload
            result = store._publish_script(
                keys=[store._redis_key(key), store._marker_key(self._upload)],
                args=[
                    "1" if if_absent else "0",
                    self._size,
                    store.chunk_size,
                    self._chunks,
                    upload,
                    repr(time.time()),
                    inline,
                    store._ttl_ms,
                    store._chunk_base,
                    store._grace_ms,
                ],
            )
        except BaseException as exc:
            self.discard()
            _reraise(store._translate(exc, key, "cannot upload", reading=False), exc)
        if result != 1:
            self.discard()
            if result == 0:
                raise ObjectExistsError(f"{store.uri_for(key)} already exists")
            raise StoreError(
                f"cannot publish {store.uri_for(key)}: its staged chunks are gone "
                f"({'staging marker' if result == -1 else 'a chunk'} missing: removed as an "
                "unfinished upload, expired or evicted; Redis needs maxmemory-policy noeviction)"
            )
        self._done = True
        self._buffer = bytearray()

    def discard(self) -> None:
        """Drop what was written: wait for chunks in flight (a late one would outlive the
        cleanup), then delete the marker and every chunk in one script. Best effort: if
        Redis is unreachable the marker stays, and reconcile finds the upload."""
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        for future in self._pending:
            future.cancel()
        for future in self._pending:
            try:
                future.result()
            except BaseException:
                pass
        self._pending.clear()
        if self._marker_written:
            try:
                self._store._remove_upload(self._upload)
            except Exception:
                pass


class RedisReader:
    """Ranged reads of one version of an object: the manifest read at open decides which
    chunks are read, so every byte served belongs to that version."""

    def __init__(self, store: RedisStore, key: str, manifest: _Manifest) -> None:
        self._store, self._key, self._manifest = store, key, manifest
        self.size = manifest.size

    def read_at(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        if not self._manifest.chunks:
            return self._manifest.data[offset:end]
        return b"".join(self._pieces(offset, end))

    def readinto_at(self, offset: int, target: memoryview) -> int:
        end = min(offset + target.nbytes, self.size)
        if offset >= end:
            return 0
        if not self._manifest.chunks:
            target[: end - offset] = self._manifest.data[offset:end]
            return end - offset
        position = 0
        for piece in self._pieces(offset, end):
            target[position : position + len(piece)] = piece
            position += len(piece)
        return position

    def _pieces(self, offset: int, end: int) -> Iterator[bytes]:
        """The bytes ``[offset, end)``, one piece per chunk overlapped, fetched with GETRANGE
        in pipelines of :data:`READ_BATCH` chunks; a short piece is a vanished chunk."""
        store, manifest = self._store, self._manifest
        size = manifest.chunk_size
        wanted = [
            (index, max(offset, index * size) - index * size, min(end, (index + 1) * size) - index * size)
            for index in range(offset // size, (end - 1) // size + 1)
        ]
        for start in range(0, len(wanted), READ_BATCH):
            batch = wanted[start : start + READ_BATCH]
            try:
                pipe = store.client.pipeline(transaction=False)
                for index, first, stop in batch:
                    pipe.getrange(store._chunk_key(manifest.upload, index), first, stop - 1)
                pieces = pipe.execute()
            except Exception as exc:
                raise store._translate(exc, self._key, "cannot read", reading=True) from exc
            for (index, first, stop), piece in zip(batch, pieces):
                if len(piece) != stop - first:
                    raise self._vanished(index)
                yield piece

    def _vanished(self, index: int) -> StoreError:
        """Why chunk ``index`` of the version being read is gone."""
        store, uri = self._store, self._store.uri_for(self._key)
        try:
            current = store.client.hget(store._redis_key(self._key), "upload")
        except Exception as exc:
            return store._translate(exc, self._key, "cannot read", reading=True)
        if current is None:
            return ObjectMissingError("stored object was deleted while being read", uri=uri)
        if current.decode() != self._manifest.upload:
            return StoreReadError(
                "stored object was replaced while being read, and the version being read is gone "
                "(read it again for the new version)",
                uri=uri,
            )
        return StoreReadError(
            f"chunk {index} of the stored object is missing: expired or evicted "
            "(Redis needs maxmemory-policy noeviction)",
            uri=uri,
        )

    def close(self) -> None:
        """Drop an inline value's bytes; nothing else is held (no connection is pinned)."""
        self._manifest = _Manifest(0, 1, 0, "", 0.0, b"")
        self.size = 0


class RedisStore(Store):
    """Objects as manifests and chunk keys under ``<prefix>/`` in one Redis database (see the
    module docstring). ``chunk_size``: bytes per chunk key; ``ttl``: seconds before a stored
    value expires (None: never); ``replaced_grace``: seconds the chunks of a replaced version
    stay readable for readers that opened it (0: deleted at once); ``inline_max``: values up to
    this size live in the manifest itself."""

    capabilities = Capabilities(
        local=False, ranged_reads=True, listing=True, cheap_publish=True, multipart=True, conditional_create=True
    )

    def __init__(
        self,
        client: Any,
        prefix: str = "",
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        ttl: float | None = None,
        replaced_grace: float = REPLACED_GRACE_S,
        inline_max: int = INLINE_MAX,
        owns_client: bool = False,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(f"Redis chunk size must be 1..{MAX_CHUNK_SIZE} bytes, got {chunk_size!r}")
        if ttl is not None and ttl < 0:
            raise ConfigError(f"Redis TTL must be positive seconds (or none), got {ttl!r}")
        if getattr(client, "connection_pool", None) is not None:
            if client.connection_pool.connection_kwargs.get("decode_responses"):
                raise ConfigError("the Redis client for a store must not decode responses (decode_responses=False)")
        self.client = client
        self.prefix = prefix.strip("/")
        self.chunk_size = chunk_size
        self.ttl = ttl or None
        self.inline_max = min(inline_max, chunk_size)
        self.root_uri = "redis:///" + self.prefix if self.prefix else "redis://"
        self._base = self.prefix + "/" if self.prefix else ""
        self._chunk_base = f"{self._base}{CHUNKS}/"
        self._ttl_ms = int(round(self.ttl * 1000)) if self.ttl else 0
        if self.ttl and self._ttl_ms < 1:
            self._ttl_ms = 1
        self._grace_ms = int(round(max(replaced_grace, 0.0) * 1000))
        self._owns_client = owns_client
        self._pool = ThreadPoolExecutor(max_workers=CHUNKS_IN_FLIGHT + 1, thread_name_prefix="xcomstash-redis")
        self._closed = False
        self._close_lock = threading.Lock()
        self._publish_script = client.register_script(_PUBLISH)
        self._put_chunk_script = client.register_script(_PUT_CHUNK)
        self._remove_script = client.register_script(_REMOVE_UPLOAD)
        self._delete_script = client.register_script(_DELETE)

    # ----------------------------------------------------------------- names

    def _redis_key(self, key: str) -> str:
        return self._base + key

    def endpoint(self) -> str | None:
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            return None
        kwargs = pool.connection_kwargs
        if "path" in kwargs:  # a Unix socket: on this machine
            return f"unix://{kwargs['path']}"
        scheme = "rediss" if "SSL" in pool.connection_class.__name__ else "redis"
        return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    def server_time(self) -> float | None:
        """Redis ``TIME``."""
        try:
            seconds, micros = self.client.time()
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            raise StoreUnavailableError(f"{self.root_uri}: cannot ask Redis for its time: {type(exc).__name__}: {exc}") from None
        return int(seconds) + int(micros) / 1e6

    def _marker_key(self, upload: str) -> str:
        return self._chunk_base + upload

    def _chunk_key(self, upload: str, index: int) -> str:
        return f"{self._chunk_base}{upload}/{index}"

    def _check_key(self, key: str) -> None:
        if not key or key.split("/", 1)[0] == CHUNKS:
            raise StoreError(f"cannot store an object at {self.uri_for(key)}: {CHUNKS}/ is reserved for chunks")

    # ------------------------------------------------------------------ writes

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        pending = _PendingChunks(self, staged_key)
        try:
            yield pending
        except BaseException as exc:
            pending.discard()
            _reraise(self._translate(exc, staged_key, "cannot upload", reading=False), exc)
        pending.discard()  # a no-op once published

    def _remove_upload(self, upload: str) -> bool:
        return bool(self._remove_script(keys=[self._marker_key(upload)], args=[f"{self._chunk_base}{upload}/"]))

    # ------------------------------------------------------------------- reads

    def _manifest(self, key: str) -> _Manifest | None:
        fields = self.client.hgetall(self._redis_key(key))
        if not fields:
            return None
        if fields.get(b"v") != FORMAT_VERSION:
            raise StoreReadError(
                f"not an xcomstash object (format {fields.get(b'v')!r}); another writer uses this prefix?",
                uri=self.uri_for(key),
            )
        return _Manifest(
            size=int(fields[b"size"]),
            chunk_size=int(fields[b"csize"]),
            chunks=int(fields[b"chunks"]),
            upload=fields[b"upload"].decode(),
            modified=float(fields[b"mtime"]),
            data=fields.get(b"data", b""),
        )

    def open_reader(self, key: str) -> ObjectReader:
        try:
            manifest = self._manifest(key)
        except Exception as exc:
            raise self._translate(exc, key, "cannot read", reading=True) from exc
        if manifest is None:
            raise ObjectMissingError("stored object is missing", uri=self.uri_for(key))
        return RedisReader(self, key, manifest)

    def get(self, key: str) -> bytes:
        reader = self.open_reader(key)
        try:
            return reader.read_at(0, reader.size)
        finally:
            reader.close()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            version, size, modified = self.client.hmget(self._redis_key(key), "v", "size", "mtime")
        except Exception as exc:
            raise self._translate(exc, key, "cannot stat", reading=False) from exc
        if version != FORMAT_VERSION:
            return None
        return ObjectInfo(key=key, size=int(size), modified=float(modified))

    def delete(self, key: str) -> None:
        try:
            self._delete_script(keys=[self._redis_key(key)], args=[self._chunk_base])
        except Exception as exc:
            raise self._translate(exc, key, "cannot delete", reading=False) from exc

    # ----------------------------------------------------------------- listing

    def _scan(self, pattern: str, kind: str) -> Iterator[list[bytes]]:
        cursor = 0
        while True:
            cursor, names = self.client.scan(cursor=cursor, match=pattern, count=1000, _type=kind)
            if names:
                yield names
            if not cursor:
                return

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Manifests under ``prefix`` (a path prefix: ``dag`` lists ``dag/...``, not
        ``dag2/...``), streamed by SCAN; chunks and staging markers are not objects.
        SCAN may return a key twice; each is listed once."""
        prefix = prefix.strip("/")
        start = self._base + (prefix + "/" if prefix else "")
        pattern = _GLOB_SPECIAL.sub(r"\\\1", start) + "*"
        strip = len(self._base)
        seen: set[bytes] = set()
        try:
            for names in self._scan(pattern, "hash"):
                fresh = [name for name in names if name not in seen]
                seen.update(fresh)
                keys = []
                for name in fresh:
                    try:
                        key = name.decode()[strip:]
                    except UnicodeDecodeError:  # not a name this store writes
                        continue
                    if key.split("/", 1)[0] != CHUNKS:
                        keys.append(key)
                pipe = self.client.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(self._redis_key(key), "v", "size", "mtime")
                for key, (version, size, modified) in zip(keys, pipe.execute() if keys else []):
                    if version == FORMAT_VERSION:  # deleted since the SCAN, or not ours
                        yield ObjectInfo(key=key, size=int(size), modified=float(modified))
        except Exception as exc:
            raise self._translate(exc, prefix, "cannot list", reading=False) from exc

    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        """Staging markers: uploads whose writer neither published nor discarded them."""
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self._chunk_base) + "*"
        try:
            for names in self._scan(pattern, "hash"):
                uploads = [n.decode()[len(self._chunk_base) :] for n in names]
                uploads = [u for u in uploads if _UPLOAD_ID.fullmatch(u)]
                pipe = self.client.pipeline(transaction=False)
                for upload in uploads:
                    pipe.hmget(self._marker_key(upload), "key", "started", "hi", "csize")
                for upload, (key, started, hi, csize) in zip(uploads, pipe.execute() if uploads else []):
                    if started is None:  # published or removed since the SCAN
                        continue
                    yield UnfinishedUpload(
                        key=(key or b"").decode(errors="replace"),
                        started=float(started),
                        token=upload,
                        size=int(hi or 0) * int(csize or 0) or None,  # at most: the last may be short
                    )
        except Exception as exc:
            raise self._translate(exc, CHUNKS, "cannot list uploads", reading=False) from exc

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        if not _UPLOAD_ID.fullmatch(upload.token):
            raise StoreError(f"not an upload of {self.root_uri}: {upload.token!r}")
        try:
            self._remove_upload(upload.token)
        except Exception as exc:
            raise self._translate(exc, CHUNKS, "cannot remove upload", reading=False) from exc

    # ------------------------------------------------------------------ errors

    def _translate(self, exc: BaseException, key: str, action: str, *, reading: bool) -> BaseException:
        """redis-py's exceptions in our hierarchy; anything else unchanged."""
        if isinstance(exc, StoreError) or not isinstance(exc, Exception) or not _is_redis_error(exc):
            return exc
        uri = self.uri_for(key)
        if isinstance(exc, redis_errors.OutOfMemoryError) or str(exc).startswith("OOM"):
            return StoreFullError(
                f"{action} {uri}: Redis refused the write, out of memory ({self._memory_note()}); "
                "nothing was kept. Raise maxmemory, lower [xcomstash] redis_ttl, or purge old values"
            )
        if isinstance(exc, (redis_errors.AuthenticationError, redis_errors.AuthorizationError)):
            return StoreUnavailableError(f"{action} {uri}: Redis refused the credentials: {exc}")
        if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)):
            return StoreUnavailableError(f"{action} {uri}: Redis unreachable: {type(exc).__name__}: {exc}")
        if reading:
            return StoreReadError(f"{action} object: Redis error: {exc}", uri=uri)
        return StoreError(f"{action} {uri}: Redis error: {type(exc).__name__}: {exc}")

    def _memory_note(self) -> str:
        """The limit that was hit, as Redis reports it (INFO works even when memory is full)."""
        try:
            info = self.client.info("memory")
            return (
                f"maxmemory {info.get('maxmemory_human')} ({info.get('maxmemory')} bytes), "
                f"used {info.get('used_memory_human')}, maxmemory-policy {info.get('maxmemory_policy')}"
            )
        except Exception:
            return "maxmemory reached"

    def close(self) -> None:
        """Stop the chunk-sending threads; close the client only if this store built it."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.shutdown(wait=True)
        if self._owns_client:
            try:
                self.client.close()
            except Exception:
                pass


def _reraise(error: BaseException, original: BaseException) -> NoReturn:
    """Raise ``error``, chained to ``original`` unless it is ``original`` itself."""
    if error is original:
        raise original
    raise error from original


def _is_redis_error(exc: BaseException) -> bool:
    return isinstance(exc, (redis_errors.RedisError, ConnectionError, TimeoutError))


def default_client(url: str | None = None) -> Any:
    """A client with timeouts (a hung server is an error after :data:`SOCKET_TIMEOUT_S`) and a
    short retry; ``url`` (else ``REDIS_URL``, else ``redis://localhost:6379/0``)."""
    url = url or os.environ.get("REDIS_URL") or "redis://localhost:6379/0"
    return redis.Redis.from_url(url, **client_options())


def client_options() -> dict[str, Any]:
    """Timeouts and retries for every client this package builds."""
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    return {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 2),
    }


def open_location(location: Any, client: Any | None) -> RedisStore:
    """The store a ``redis://`` URL names. ``client``: a ``redis.Redis``, a
    :class:`ConfiguredRedis` (client plus chunk size and TTL), or None for
    :func:`default_client`."""
    if client is None:
        return RedisStore(default_client(), location.prefix, owns_client=True)
    if isinstance(client, ConfiguredRedis):
        return RedisStore(client.client, location.prefix, chunk_size=client.chunk_size, ttl=client.ttl)
    return RedisStore(client, location.prefix)
