"""Delete the objects of XComs whose rows are gone, link-aware.

For a content-addressed blob, the XCom's link goes first; the blob goes only when no link to
it is left in its run (another XCom may still use it). A per-XCom object goes with its XCom.
Used by retention after it deleted rows, by the engine when a row is replaced, and (the
"is a blob still linked" step) by reconcile; anything missed (an interrupted run) is collected
by reconcile later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, TypeVar

from xcomstash.coordinate import XComCoordinate, hex_of, parse_blob_key, parse_link_key, run_links_prefix
from xcomstash.errors import InvalidReferenceError, StoreError
from xcomstash.maintenance.listing import list_objects
from xcomstash.format.reference import Reference
from xcomstash.stores.base import Store

#: Whatever a caller tracks a blob by (its key, or its listing entry).
Blob = TypeVar("Blob")


@dataclass
class PurgeResult:
    deleted: int = 0
    deleted_bytes: int = 0
    kept_shared: int = 0
    errors: list[str] = field(default_factory=list)


def linked_digests(store: Store, run_prefix: str) -> set[str]:
    """The hex digests named by the links of one DAG run (``<dag>/<run>``): the blobs of that
    run some XCom still uses. Links are named by their blob's digest, also for a blob kept
    under a streamed name, so the digest is what a blob is matched by. One listing of the
    run's links; raises :class:`StoreError` if it fails (callers then delete nothing)."""
    return {
        link.hex_digest
        for info in list_objects(store, run_links_prefix(run_prefix))
        if (link := parse_link_key(info.key)) is not None
    }


def unlinked_blobs(
    store: Store, run_prefix: str, blobs: Iterable[tuple[Blob, str]]
) -> tuple[list[Blob], list[Blob]]:
    """Split candidate blobs of one run, given as ``(blob, hex digest)``, into those no link
    names (safe to delete once the caller's own checks pass) and those a link still names.

    The single decision both purge and reconcile make before deleting a shared blob, taken
    after the caller removed the links it owns, so a link written meanwhile keeps the blob.
    """
    linked = linked_digests(store, run_prefix)
    unlinked: list[Blob] = []
    kept: list[Blob] = []
    for blob, hex_digest in blobs:
        (kept if hex_digest in linked else unlinked).append(blob)
    return unlinked, kept


def purge_objects(store: Store, items: Iterable[tuple[XComCoordinate, Reference]]) -> PurgeResult:
    """Delete what ``items`` (XComs whose rows are gone, with their references) keep in the
    store. Per DAG run the links go first, then the run's links are listed once and the blobs
    no link names go too; a single item costs one listing."""
    result = PurgeResult()
    blobs: dict[str, dict[str, str]] = {}  # run prefix -> {blob key: digest hex}, deleted if unlinked
    for coordinate, ref in items:
        try:
            key = store.key_for(ref.uri)
        except InvalidReferenceError:
            continue
        blob = parse_blob_key(key)
        try:
            if blob is None:
                _delete(store, key, result)
                continue
            _delete(store, coordinate.link_key(ref.digest), result)
            blobs.setdefault(blob.run_prefix, {})[key] = hex_of(ref.digest)
        except StoreError as exc:
            result.errors.append(f"cannot delete the object of {coordinate}: {exc}")
    for run_prefix, keys in blobs.items():
        try:
            doomed, shared = unlinked_blobs(store, run_prefix, keys.items())
            result.kept_shared += len(shared)
            for key in doomed:
                _delete(store, key, result)
        except StoreError as exc:
            result.errors.append(f"cannot purge blobs of {run_prefix}: {exc}")
    return result


def _delete(store: Store, key: str, result: PurgeResult) -> None:
    info = store.head(key)
    if info is None:
        return
    store.delete(key)
    result.deleted += 1
    result.deleted_bytes += info.size
