"""One store made of several locations: every object is written to all of them, and read
from the first that serves it intact.

    store = ReplicatedStore([LocalStore("/mnt/a"), S3Store(...)], write_quorum=1)

**Writes.** A push streams its bytes to every location at once (each location's own
:class:`PendingObject`), then publishes in each. The push succeeds when at least
``write_quorum`` locations (default: all) published; below that, what was published is
deleted again and :class:`StoreUnavailableError` names the locations that failed, so no
reference ever points at an object too few locations hold. A location that failed a push it
was not needed for lacks that object until it is copied there.

**Reads.** :meth:`read_sources` lists each location's sources in order (``replica:0``,
``replica:1``, ...). The pull path verifies what each serves against the reference and moves
to the next on a missing object, an unreachable location or damaged bytes, so one location
lost or corrupted is read around, never handed to a task.

References name the first location's URIs; an object has the same key in every location.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, Sequence

from xcomstash.errors import ConfigError, ObjectExistsError, ObjectMissingError, StoreError, StoreUnavailableError
from xcomstash.stores import composite
from xcomstash.stores.composite import combined_capabilities, list_once
from xcomstash.stores.base import (
    ObjectInfo,
    ObjectReader,
    PendingObject,
    ReadSource,
    Store,
    UnfinishedUpload,
)

log = logging.getLogger("xcomstash")


class ReplicatedStore(Store):
    def __init__(
        self,
        locations: Sequence[Store],
        *,
        write_quorum: int | None = None,
        read_order: Sequence[int] | None = None,
    ) -> None:
        if len(locations) < 2:
            raise ConfigError("a replicated store needs at least two locations")
        quorum = len(locations) if write_quorum is None else write_quorum
        if not 1 <= quorum <= len(locations):
            raise ConfigError(f"write_quorum must be 1..{len(locations)}, got {write_quorum!r}")
        order = tuple(range(len(locations))) if read_order is None else tuple(read_order)
        if sorted(order) != list(range(len(locations))):
            raise ConfigError(
                f"read_order must list each location of store_url once (0..{len(locations) - 1}), got {list(order)}"
            )
        uris = [loc.root_uri for loc in locations]
        twins = sorted({uri for uri in uris if uris.count(uri) > 1})
        if twins:
            # References record holders by root URI: two locations with one URI (the same
            # bucket and prefix behind two endpoints) could not be told apart.
            raise ConfigError(
                f"store_url names {', '.join(twins)} more than once; each location needs its own "
                "bucket, container or prefix"
            )
        self.locations = tuple(locations)
        self.write_quorum = quorum
        self.read_order = order
        self.root_uri = locations[0].root_uri
        # One writer thread per location: a push streams to every location at once.
        self._writers = ThreadPoolExecutor(max_workers=len(locations), thread_name_prefix="xcomstash-replica")
        self.capabilities = combined_capabilities(self.locations)

    def __repr__(self) -> str:
        return f"ReplicatedStore({list(self.locations)!r}, write_quorum={self.write_quorum})"

    @property
    def location_uris(self) -> tuple[str, ...]:
        return tuple(loc.root_uri for loc in self.locations)

    # ----------------------------------------------------------------- writes

    @contextmanager
    def new_object(self, staged_key: str) -> Iterator[PendingObject]:
        with ExitStack() as stack:
            members: list[PendingObject | None] = []
            failures: list[str] = []
            missed: list[str] = []
            for i, loc in enumerate(self.locations):
                try:
                    members.append(stack.enter_context(loc.new_object(staged_key)))
                except StoreError as exc:
                    members.append(None)
                    failures.append(f"{loc.root_uri}: {exc}")
                    missed.append(f"replica:{i}: {type(exc).__name__}")
            pending = _FanOut(self, members, failures, missed)
            pending.check_quorum()
            yield pending

    # ------------------------------------------------------------------ reads

    def read_sources(
        self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer: Sequence[str] = ()
    ) -> builtins.list[ReadSource]:
        """Each location's sources, in :attr:`read_order`; locations the reference names
        (``prefer``) before those it does not (they may lack the object, or hold a copy
        ``repair`` made since)."""
        holders = set(prefer)
        order = sorted(self.read_order, key=lambda i: bool(holders) and self.locations[i].root_uri not in holders)
        sources: list[ReadSource] = []
        for i in order:
            loc = self.locations[i]
            for source in loc.read_sources(key, size_hint=size_hint, whole=whole, prefer=prefer):
                name = f"replica:{i}" if source.name == "store" else f"replica:{i}:{source.name}"
                sources.append(dataclasses.replace(source, name=name, open=self._named(key, i, source.open)))
        return sources

    def _named(self, key: str, index: int, open_: Callable[[], ObjectReader | None]) -> Callable[[], ObjectReader | None]:
        """A location's missing object is reported under the URI references use."""

        def open_source() -> ObjectReader | None:
            try:
                return open_()
            except ObjectMissingError as exc:
                raise ObjectMissingError(
                    f"{exc.detail} (location {index}: {self.locations[index].root_uri})", uri=self.uri_for(key)
                ) from exc

        return open_source

    def _first(self, key: str, read: str) -> object:
        """The first location that serves ``key``; unreachable beats missing in the error
        (a location that is down may hold the object)."""
        unavailable: StoreError | None = None
        for loc in self.locations:
            try:
                return getattr(loc, read)(key)
            except ObjectMissingError:
                continue
            except StoreError as exc:
                unavailable = exc
        if unavailable is not None:
            raise unavailable
        raise ObjectMissingError(f"no location holds {key}", uri=self.uri_for(key))

    def get(self, key: str) -> bytes:
        return self._first(key, "get")  # type: ignore[return-value]

    def open_reader(self, key: str) -> ObjectReader:
        return self._first(key, "open_reader")  # type: ignore[return-value]

    def head(self, key: str) -> ObjectInfo | None:
        for loc in self.locations:
            try:
                info = loc.head(key)
            except StoreError:
                continue
            if info is not None:
                return info
        return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object any of them holds, listed once."""
        return list_once(self.locations, prefix)

    def unfinished_uploads(self) -> Iterator[UnfinishedUpload]:
        return composite.unfinished_uploads(self.locations)

    def remove_unfinished(self, upload: UnfinishedUpload) -> None:
        composite.remove_unfinished(self.locations, upload, self.root_uri)

    # ---------------------------------------------------------------- delete

    def delete(self, key: str) -> None:
        """Delete everywhere; a location that cannot be reached is an error (after trying
        every other one), since it would keep a copy a later read could serve."""
        errors = []
        for loc in self.locations:
            try:
                loc.delete(key)
            except StoreError as exc:
                errors.append(f"{loc.root_uri}: {exc}")
        if errors:
            raise StoreUnavailableError(f"cannot delete {key} in every location: {'; '.join(errors)}")

    def key_for(self, uri: str) -> str:
        return self.locations[0].key_for(uri)

    def uri_for(self, key: str) -> str:
        return self.locations[0].uri_for(key)

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        for loc in self.locations:
            loc.close()


class _FanOut:
    """One pending object per location; a location that fails drops out, the others go on,
    and publishing needs the quorum."""

    def __init__(
        self, store: ReplicatedStore, members: list[PendingObject | None], failures: list[str], missed: list[str]
    ) -> None:
        self._store = store
        self._members = members
        self._failures = failures
        #: The locations that dropped out, as ``"replica:<i>: <error type>"`` (named like
        #: their read sources), for the push's event: a push that reached the quorum without
        #: every location still met those errors.
        self.missed = missed
        #: After publish: the root URIs of the locations holding the object.
        self.holders: tuple[str, ...] | None = None

    def _live(self) -> list[tuple[int, PendingObject]]:
        return [(i, m) for i, m in enumerate(self._members) if m is not None]

    def _drop(self, index: int, exc: BaseException) -> None:
        member = self._members[index]
        self._members[index] = None
        self._failures.append(f"{self._store.locations[index].root_uri}: {exc}")
        self.missed.append(f"replica:{index}: {type(exc).__name__}")
        if member is not None:
            try:
                member.discard()
            except StoreError:
                pass

    def check_quorum(self) -> None:
        if len(self._live()) < self._store.write_quorum:
            raise StoreUnavailableError(
                f"only {len(self._live())} of {len(self._members)} locations can take the object, "
                f"write_quorum is {self._store.write_quorum}: {'; '.join(self._failures)}"
            )

    @property
    def cheap_publish(self) -> bool:
        return all(m.cheap_publish for _, m in self._live())

    @property
    def staged_key(self) -> str:
        live = self._live()
        return live[0][1].staged_key if live else ""

    def _each(self, action: Callable[[int, PendingObject], None]) -> dict[int, BaseException]:
        """Run ``action`` on every live member at once (one thread per location); the
        exceptions, by location. Waits for all: the caller's buffer may be reused after."""
        live = self._live()
        if len(live) == 1:  # no thread hop when one location is left
            try:
                action(*live[0])
                return {}
            except Exception as exc:
                return {live[0][0]: exc}
        futures = {i: self._store._writers.submit(action, i, m) for i, m in live}
        errors: dict[int, BaseException] = {}
        for i, future in futures.items():
            exc = future.exception()
            if exc is not None:
                errors[i] = exc
        return errors

    def write(self, data: bytes | memoryview) -> int:
        errors = self._each(lambda i, member: member.write(data))
        for i, exc in errors.items():
            if not isinstance(exc, StoreError):
                raise exc
            self._drop(i, exc)
        self.check_quorum()
        return len(data)

    def publish(self, key: str, *, if_absent: bool = False) -> None:
        """Publish in every live location at once. With ``if_absent`` (content-addressed
        objects, whose key names their bytes) a location that already holds the key counts as
        holding the object; :class:`ObjectExistsError` only when every location already held it.
        Afterwards :attr:`holders` names the locations that hold the object."""
        live = [i for i, _ in self._live()]
        errors = self._each(lambda i, member: member.publish(key, if_absent=if_absent))
        published = [i for i in live if i not in errors]
        held = [i for i, exc in errors.items() if isinstance(exc, ObjectExistsError)]
        for i, exc in errors.items():
            if i in held:
                self._members[i] = None
            elif isinstance(exc, StoreError):
                self._drop(i, exc)
            else:
                self.discard()
                raise exc
        if held and not published and not self._failures:
            raise ObjectExistsError(f"{self._store.uri_for(key)} already exists")
        if len(published) + len(held) < self._store.write_quorum:
            for i in published:  # below quorum: no location keeps a copy nothing references
                try:
                    self._store.locations[i].delete(key)
                except StoreError:
                    log.warning("xcomstash: could not remove %s from %s after a failed push", key,
                                self._store.locations[i].root_uri)
            raise StoreUnavailableError(
                f"{self._store.uri_for(key)} was written to {len(published)} of {len(self._members)} "
                f"locations, write_quorum is {self._store.write_quorum}: {'; '.join(self._failures)}"
            )
        self.holders = tuple(self._store.locations[i].root_uri for i in sorted(published + held))
        if self._failures:
            log.warning("xcomstash: %s is missing from some locations: %s", key, "; ".join(self._failures))

    def discard(self) -> None:
        for _, member in self._live():
            member.discard()

    def flush(self) -> None:
        for _, member in self._live():
            getattr(member, "flush", lambda: None)()


__all__ = ["ReplicatedStore"]
