"""The store interface: a flat key space of immutable-once-written objects.

Keys are ``/``-separated relative paths produced by :meth:`XComCoordinate.object_key`. A store
turns keys into URIs (what the reference records) and back, refusing any URI outside its root,
so a reference can never make a worker read somewhere it was not configured to.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

from xcomstash.errors import InvalidReferenceError


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # POSIX seconds


class ObjectReader(Protocol):
    """Random access to one stored object, for reading frames in parallel without copies."""

    size: int

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset`` (fewer only at the end of the object)."""

    def readinto_at(self, offset: int, target: memoryview) -> int:
        """Fill ``target`` from ``offset``; returns the bytes read (fewer only at the end)."""

    def close(self) -> None: ...


class PendingObject(Protocol):
    """A stream whose key is chosen after it is written (content addressing: the name is the
    digest of what was written). Nothing is visible until :meth:`publish`."""

    @property
    def cheap_publish(self) -> bool:
        """The bytes may still be published under any key (a rename, or a single PUT not yet
        sent). When False (an S3 multipart upload under way) only :attr:`staged_key` is
        possible, and a writer that finds the content already stored should :meth:`discard`."""

    @property
    def staged_key(self) -> str:
        """Where the bytes are being streamed: publishing under this key costs nothing more."""

    def write(self, data: bytes | memoryview) -> int: ...

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        """Make the written bytes the object ``key`` (atomically replacing any object there).

        ``if_absent``: publish only if no object ``key`` exists, else discard the bytes and
        raise :class:`~xcomstash.errors.ObjectExistsError`. Atomic in the service where
        :attr:`Capabilities.conditional_create` says so (S3 ``If-None-Match``, GCS
        ``ifGenerationMatch=0``, a hard link on disk); elsewhere a check just before publishing."""

    def discard(self) -> None:
        """Drop the written bytes; nothing becomes visible."""


@dataclass(frozen=True)
class Capabilities:
    """What a store does cheaply, so callers (the engine, wrappers) choose a strategy by
    asking instead of by checking the store's class."""

    #: On this machine's disk: not worth caching (a cache copy would cost as much as a read).
    local: bool = False
    #: ``read_at`` on arbitrary offsets is cheap, so frames can be fetched in parallel.
    ranged_reads: bool = True
    #: :meth:`Store.list` works (reconcile and retention need it).
    listing: bool = True
    #: Content-addressed publish (write under a staged key, publish under the digest) is a
    #: rename or a single PUT for every object. When False, :attr:`PendingObject.cheap_publish`
    #: tells per object (S3: only objects that fit one part).
    cheap_publish: bool = True
    #: Large objects are uploaded in parts while they are still being encoded (S3 multipart):
    #: a push streams instead of staging the whole object first.
    multipart: bool = False
    #: ``publish(key, if_absent=True)`` is one atomic request to the service, so two writers
    #: racing for the same key cannot both win.
    conditional_create: bool = False


@dataclass(frozen=True)
class UnfinishedUpload:
    """Bytes a writer started to store and neither published nor discarded (a killed process):
    an S3 multipart upload, staged Azure blocks, a temporary file, Redis chunks. Invisible to
    readers and to :meth:`Store.list`, but they cost space; ``reconcile`` removes those older
    than its grace period."""

    #: The key the bytes were headed for (as far as the store knows; informational).
    key: str
    #: When the upload started (POSIX seconds).
    started: float
    #: What the store needs to remove it (an S3 upload id, a file name, a staging key).
    token: str
    #: Bytes held, when the store knows.
    size: int | None = None


def _nothing() -> None:
    """The default :attr:`ReadSource.discard`: a store's own copy is not ours to drop."""


@dataclass(frozen=True)
class ReadSource:
    """One place the bytes of an object may be read from, in the order the pull path tries them.

    Sources are lazy: building the list touches nothing; :attr:`open` does the work. The pull
    path verifies what each source serves against the reference and moves on to the next source
    on an integrity or availability error, so a source never has to be right, only honest about
    failing.
    """

    #: "store", "cache", later "replica:<n>": for traces and metrics.
    name: str
    #: ``None``: this source does not hold the object (a cache miss): try the next. Raises
    #: :class:`StoreError` subclasses (:class:`ObjectMissingError`,
    #: :class:`StoreUnavailableError`, ...) when it should hold the object but cannot serve it.
    open: Callable[[], ObjectReader | None]
    #: Called by the pull path when what this source served failed verification
    #: (:class:`IntegrityError`): a cache evicts its entry; a store does nothing.
    discard: Callable[[], None] = _nothing


class Store(ABC):
    #: The root URI; every object URI starts with ``root_uri + "/"``.
    root_uri: str
    #: What this store does cheaply; subclasses override the class attribute.
    capabilities: Capabilities = Capabilities()

    @property
    def is_local(self) -> bool:
        """Kept for callers written before :class:`Capabilities`: ``capabilities.local``."""
        return self.capabilities.local

    def read_sources(
        self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer: Sequence[str] = ()
    ) -> builtins.list[ReadSource]:
        """Where the bytes of ``key`` may be read from, in the order to try them.

        A plain store is its own only source; wrappers (a read cache, replicas) put theirs
        around it. ``size_hint`` (the size the reference records, if known) lets a wrapper
        skip what cannot help, e.g. a cache that could not hold an object that large.
        ``whole=False`` says the reader will fetch only part of the object (a partial table
        read): a cache then serves a copy it has, but does not fetch the whole object to fill one.
        ``prefer``: root URIs of the locations the reference says hold the object (a replicated
        store tries those first).
        """
        return [ReadSource("store", lambda: self.open_reader(key))]

    def close(self) -> None:
        """Release threads, connections and descriptors. Idempotent; the default holds none."""

    def endpoint(self) -> str | None:
        """The URL this store's client talks to (its scheme says whether it uses TLS), for
        ``xcomstash check``; ``None`` for a store on this machine's disk."""
        return None

    def server_time(self) -> float | None:
        """The service's own clock (POSIX seconds) as it reports it now (an HTTP ``Date``
        header, Redis ``TIME``), for ``xcomstash check`` to compare with this host's clock;
        ``None`` when the service reports none. Raises :class:`StoreUnavailableError` if it
        cannot be asked."""
        return None

    @contextmanager
    def writer(self, key: str) -> Iterator[PendingObject]:
        """A stream that becomes the object ``key`` atomically when the block exits cleanly.

        On an exception nothing is published: readers see the old object or none, never a
        partial one. (A :meth:`new_object` whose key is known from the start.)
        """
        with self.new_object(key) as pending:
            yield pending
            pending.publish(key)

    @abstractmethod
    def new_object(self, staged_key: str) -> AbstractContextManager[PendingObject]:
        """A :class:`PendingObject` streamed towards ``staged_key`` (or a temporary file next
        to it). Leaving the block without :meth:`PendingObject.publish` (or with an exception)
        discards it."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object. Raises :class:`ObjectMissingError` if absent,
        :class:`StoreUnavailableError` if the store cannot be reached."""

    @abstractmethod
    def open_reader(self, key: str) -> ObjectReader:
        """Random access to an object; raises like :meth:`get` if it is absent or unreachable."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error (purge is idempotent)."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size and modification time, or ``None`` if absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, streamed (stores may hold millions)."""

    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        """Uploads started under this store's root and never finished (see
        :class:`UnfinishedUpload`). The default: a store that leaves none behind."""
        return iter(())

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        """Remove the bytes of an unfinished upload; already gone is not an error."""

    def uri_for(self, key: str) -> str:
        return f"{self.root_uri}/{key}"

    def key_for(self, uri: str) -> str:
        """The key of a URI inside this store; anything else is an invalid reference."""
        prefix = self.root_uri + "/"
        if not uri.startswith(prefix):
            raise InvalidReferenceError(
                f"reference points outside the configured store {self.root_uri!r}: {uri!r:.300}"
            )
        key = uri[len(prefix) :]
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\x00" in key:
            raise InvalidReferenceError(f"reference has an unsafe object key: {uri!r:.300}")
        return key
