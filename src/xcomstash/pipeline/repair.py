"""Copy a value to the locations of a replicated store that lack it or hold a damaged copy.

A push below the full write quorum, a location restored from an old backup, a copy damaged
on disk: each leaves a value held by fewer locations than configured, and the next failure of
the locations that do hold it would lose it. Repair re-establishes every copy from one that
verifies, and only from one that verifies:

- the reference has passed the pull checks against its own row (the engine opens it) before
  anything is read, so a forged or copied row cannot make repair spread bytes it names;
- the source copy is checked in full (size, root digest, every frame) against the reference
  before a byte is copied, and the new copy is checked the same way after it is published;
- each copy is published atomically (the location's own writer), so a reader of a location
  being repaired sees the damaged copy or the good one, never a mix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from xcomstash.errors import StoreError
from xcomstash.format.reference import Reference
from xcomstash.maintenance.verify import CORRUPT, MISSING, OK, check_object
from xcomstash.stores.base import Store

#: Bytes per ranged read while copying (memory stays bounded by this, not the object size).
COPY_CHUNK = 8 * 1024 * 1024


@dataclass
class Repaired:
    """What repair found and did for one object."""

    #: Locations (root URIs) whose copy was intact.
    intact: list[str] = field(default_factory=list)
    #: Locations that got a new copy (or would, in a dry run).
    copied: list[str] = field(default_factory=list)
    copied_bytes: int = 0
    #: Locations that could not be checked or written: ``"<root>: <error>"``.
    errors: list[str] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        """No location holds an intact copy: nothing to repair from."""
        return not self.intact


@dataclass
class RepairResult:
    """What a repair run did, over all rows."""

    dry_run: bool = False
    #: References that passed the checks (rows sharing one blob count once each).
    references: int = 0
    #: Objects whose every copy was intact.
    healthy: int = 0
    #: Objects that got (or, dry run, would get) new copies, and how many copies.
    repaired: int = 0
    copies: int = 0
    copied_bytes: int = 0
    #: URIs of objects no location holds intact (nothing to repair from).
    lost: list[str] = field(default_factory=list)
    #: Locations that could not be checked or written, per object.
    errors: list[str] = field(default_factory=list)
    #: References refused by the checks (forged, copied from another row): nothing copied.
    refused: list[str] = field(default_factory=list)

    def note(self, uri: str, repaired: Repaired) -> None:
        if repaired.lost:
            self.lost.append(uri)
        elif repaired.copied:
            self.repaired += 1
            self.copies += len(repaired.copied)
            self.copied_bytes += repaired.copied_bytes
        elif not repaired.errors:
            self.healthy += 1
        self.errors.extend(f"{uri}: {e}" for e in repaired.errors)

    @property
    def complete(self) -> bool:
        return not (self.lost or self.errors or self.refused)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"complete": self.complete}


def _unwrapped(store: Any) -> Any:
    while not hasattr(store, "locations") and not hasattr(store, "stores") and hasattr(store, "inner"):
        store = store.inner  # a wrapper (cache, faults) around a replicated or routed store
    return store


def locations_of(store: Store, key: str | None = None) -> tuple[Store, ...]:
    """The locations that hold ``key``: a replicated store's members (of the DAG's store, with
    per-DAG stores), else the store itself. Without a key: the default store's."""
    inner = _unwrapped(store)
    if hasattr(inner, "stores"):  # per-DAG stores: the one this key's DAG uses
        inner = _unwrapped(inner.store_for_key(key) if key is not None else inner.default)
    return tuple(getattr(inner, "locations", (inner,)))


def replicated_groups(store: Store) -> list[tuple[Store, ...]]:
    """The location groups of every store behind ``store`` (one per per-DAG store) that has
    several locations: what repair has to work on."""
    inner = _unwrapped(store)
    stores = [_unwrapped(s) for s in getattr(inner, "stores", (inner,))]
    return [tuple(s.locations) for s in stores if len(getattr(s, "locations", ())) > 1]


def repair_object(store: Store, key: str, ref: Reference, *, dry_run: bool = False) -> Repaired:
    """Check ``key`` in every location against ``ref``; copy an intact copy over the missing
    and damaged ones."""
    result = Repaired()
    damaged: list[Store] = []
    source: Store | None = None
    for location in locations_of(store, key):
        status, detail, _ = check_object(location, _at(location, key, ref), full=True)
        if status == OK:
            result.intact.append(location.root_uri)
            source = source or location
        elif status in (MISSING, CORRUPT):
            damaged.append(location)
        else:
            result.errors.append(f"{location.root_uri}: {detail}")
    if source is None:
        return result
    for target in damaged:
        if dry_run:
            result.copied.append(target.root_uri)
            continue
        try:
            result.copied_bytes += copy_object(source, target, key)
            status, detail, _ = check_object(target, _at(target, key, ref), full=True)
            if status != OK:
                raise StoreError(f"the copy does not verify ({status}: {detail})")
        except StoreError as exc:
            result.errors.append(f"{target.root_uri}: {exc}")
            continue
        result.copied.append(target.root_uri)
    return result


def _at(location: Store, key: str, ref: Reference) -> Reference:
    """``ref`` naming the object in ``location`` (references name the first location)."""
    return dataclasses.replace(ref, uri=location.uri_for(key))


def copy_object(source: Store, target: Store, key: str) -> int:
    """Stream ``key`` from ``source`` into ``target`` (published atomically); the bytes copied."""
    reader: Any = source.open_reader(key)
    try:
        with target.writer(key) as sink:
            offset = 0
            while offset < reader.size:
                chunk = reader.read_at(offset, min(COPY_CHUNK, reader.size - offset))
                if not chunk:
                    raise StoreError(f"{source.uri_for(key)} ended at {offset} of {reader.size} bytes")
                sink.write(chunk)
                offset += len(chunk)
        return offset
    finally:
        reader.close()
