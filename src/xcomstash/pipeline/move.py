"""Moving values out of a previous store (``previous_store_urls``) into the store their DAG
writes to now: what ``xcomstash move`` does after ``store_url`` moved to a new bucket or
prefix.

Each object is copied under the same key, the copy verified frame by frame against the
reference (the source is verified first: a damaged object is reported, never copied), and
only then is the row's reference rewritten to name the new location, re-signed, with a
compare-and-set on the row (a row a task rewrote meanwhile is left alone). The old object is
deleted last, once no row of this run names it, so an interrupted move loses nothing: run it
again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from xcomstash.errors import StoreError
from xcomstash.format.reference import Reference
from xcomstash.maintenance.verify import OK, check_object
from xcomstash.pipeline.repair import copy_object
from xcomstash.stores.base import Store


@dataclass
class MoveResult:
    dry_run: bool = False
    references: int = 0
    #: References already naming the store their DAG writes to.
    in_place: int = 0
    moved: int = 0
    moved_bytes: int = 0
    #: Old objects deleted after every row naming them was rewritten.
    deleted: int = 0
    errors: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"complete": not self.errors and not self.refused}


def home_store(store: Store, key: str) -> Store:
    """The store writes of ``key`` go to (a routed store's DAG store, else ``store``)."""
    inner: Any = store
    while not hasattr(inner, "store_for_key") and hasattr(inner, "inner"):
        inner = inner.inner  # a wrapper (cache, faults) around a routed store
    return inner.store_for_key(key) if hasattr(inner, "store_for_key") else store


def source_store(store: Store, uri: str) -> Store | None:
    """The configured store whose root ``uri`` lies under."""
    inner: Any = store
    while not hasattr(inner, "stores") and hasattr(inner, "inner"):
        inner = inner.inner
    for candidate in getattr(inner, "stores", (store,)):
        if uri.startswith(candidate.root_uri + "/"):
            return candidate
    return None


def move_object(
    store: Store, key: str, ref: Reference, link_key: str | None, *, dry_run: bool
) -> tuple[Reference | None, int]:
    """Copy the object ``ref`` names (and the XCom's ``link_key`` to it, where the source
    has one) into its home store; the reference naming the copy (``None``: it already is
    there) and the bytes copied. Raises :class:`StoreError` when the source is damaged or
    the copy does not verify."""
    home = home_store(store, key)
    if ref.uri == home.uri_for(key):
        return None, 0
    source = source_store(store, ref.uri)
    if source is None:
        raise StoreError(f"{ref.uri} is in none of the configured stores")
    status, detail, _ = check_object(source, ref, full=True)
    if status != OK:
        raise StoreError(f"the object to move does not verify ({status}: {detail}); nothing was copied")
    moved = dataclasses.replace(ref, uri=home.uri_for(key), locations=None, mac=None)
    if dry_run:
        return moved, ref.size
    copied = 0
    if home.head(key) is None or check_object(home, moved, full=True)[0] != OK:
        copied = copy_object(source, home, key)
    status, detail, _ = check_object(home, moved, full=True)
    if status != OK:
        raise StoreError(f"the copy in {home.root_uri} does not verify ({status}: {detail})")
    if link_key is not None and source.head(link_key) is not None and home.head(link_key) is None:
        copy_object(source, home, link_key)  # what dedup, reconcile and `xcomstash get` follow
    return moved, copied
