"""Delete the objects of XComs whose rows are gone, link-aware.

For a content-addressed blob, the XCom's link goes first; the blob goes only when no link to
it is left in its run (another XCom may still use it). A per-XCom object goes with its XCom.
Used by retention after it deleted rows; anything missed (an interrupted run) is collected
by reconcile later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from xcomstash.coordinate import XComCoordinate, hex_of, parse_blob_key, parse_link_key
from xcomstash.errors import InvalidReferenceError, StoreError
from xcomstash.maintenance.listing import list_objects
from xcomstash.format.reference import Reference
from xcomstash.stores.base import Store


@dataclass
class PurgeResult:
    deleted: int = 0
    deleted_bytes: int = 0
    kept_shared: int = 0
    errors: list[str] | None = None


def purge_objects(store: Store, items: Iterable[tuple[XComCoordinate, Reference]]) -> PurgeResult:
    result = PurgeResult(errors=[])
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
            result.errors.append(f"cannot delete the object of {coordinate}: {exc}")  # type: ignore[union-attr]
    for run_prefix, keys in blobs.items():
        try:
            # Links are named by the blob's digest (also for blobs kept under a streamed name).
            linked = {
                parsed.hex_digest
                for info in list_objects(store, f"{run_prefix}/.links/")
                if (parsed := parse_link_key(info.key)) is not None
            }
            for key, hex_digest in keys.items():
                if hex_digest in linked:
                    result.kept_shared += 1
                else:
                    _delete(store, key, result)
        except StoreError as exc:
            result.errors.append(f"cannot purge blobs of {run_prefix}: {exc}")  # type: ignore[union-attr]
    return result


def _delete(store: Store, key: str, result: PurgeResult) -> None:
    info = store.head(key)
    if info is None:
        return
    store.delete(key)
    result.deleted += 1
    result.deleted_bytes += info.size
