"""Delete the objects of XComs whose rows are gone, link-aware: the one place that deletes.

For a content-addressed blob, the XCom's link goes first; the blob goes only when no link to
it is left in its run (another XCom may still use it). A per-XCom object goes with its XCom.
Used by the engine's purge (a replaced row, Airflow's delete, retention after it deleted
rows) and by reconcile for orphans; anything missed (an interrupted run) is collected by
reconcile later.

What may be deleted is decided from the XCom whose row is going, never from the row's
content alone: a reference may only delete that XCom's own per-XCom object or a blob of that
XCom's DAG run (whose name, or content, carries the reference's digest)
(:func:`owned_key`), and reconcile may only delete keys of the object layout
(:func:`check_deletable`), never the audit log or anything else in the store. A row forged or
copied from another XCom can therefore not make a purge delete someone else's object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, TypeVar

from xcomstash.coordinate import XComCoordinate, hex_of, parse_blob_key, parse_link_key, run_links_prefix
from xcomstash.errors import InvalidReferenceError, PurgeRefusedError, StoreError
from xcomstash.format import container
from xcomstash.format.keyspace import KeyKind, classify, is_reserved
from xcomstash.maintenance.listing import list_objects
from xcomstash.format.reference import Reference
from xcomstash.stores.base import Store

#: Told of every object deleted: ``(the XCom it was deleted for, key, size)``. The XCom is
#: ``None`` for a reconcile orphan whose XCom the key does not name (a blob).
OnDelete = Callable[[XComCoordinate | None, str, int], None]

#: Whatever a caller tracks a blob by (its key, or its listing entry).
Blob = TypeVar("Blob")


@dataclass
class PurgeResult:
    deleted: int = 0
    deleted_bytes: int = 0
    kept_shared: int = 0
    errors: list[str] = field(default_factory=list)
    #: XComs whose objects were purged (their references passed every check).
    purged: int = 0
    #: References refused (forged, copied, outside their XCom's keyspace): nothing deleted.
    refused: list[str] = field(default_factory=list)


def owned_key(store: Store, coordinate: XComCoordinate, ref: Reference) -> str:
    """The key of ``ref``'s object if a purge of ``coordinate`` may delete it: the XCom's own
    per-XCom object, or a blob of the XCom's DAG run named by the reference's digest (a blob
    kept under a streamed name is checked against its content when it is deleted).

    Raises :class:`InvalidReferenceError` for a URI outside the store and
    :class:`PurgeRefusedError` for anything else (another XCom's object, another run's blob,
    the audit log, a foreign key): whatever a row says, a purge stays in its own keyspace.
    """
    key = store.key_for(ref.uri)
    if key == coordinate.object_key():
        return key
    blob = parse_blob_key(key)
    if blob is not None and blob.run_prefix == coordinate.run_prefix():
        if blob.hex_digest is None or blob.hex_digest == hex_of(ref.digest):
            return key
    raise PurgeRefusedError(
        f"not purging {ref.uri!r:.300} for XCom {coordinate}: it is not an object of that XCom "
        "(the row holds a reference written for another XCom, or forged)"
    )


def check_deletable(key: str) -> KeyKind:
    """The kind of a key reconcile wants to delete as an orphan; :class:`PurgeRefusedError`
    for the audit log and anything not in the object layout (never deleted by maintenance)."""
    kind = classify(key)
    if is_reserved(key) or kind is KeyKind.FOREIGN:
        raise PurgeRefusedError(f"not deleting {key!r:.300}: not an xcomstash object, link or upload")
    return kind


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


def purge_objects(
    store: Store, items: Iterable[tuple[XComCoordinate, Reference]], on_delete: OnDelete | None = None
) -> PurgeResult:
    """Delete what ``items`` (XComs whose rows are gone, with their references) keep in the
    store. Per DAG run the links go first, then the run's links are listed once and the blobs
    no link names go too; a single item costs one listing.

    Callers hand in references that passed the pull checks (the engine's purge); each is
    still held to :func:`owned_key`, so no caller can delete outside the XCom's keyspace."""
    result = PurgeResult()
    # run prefix -> {blob key: (digest hex, the XCom it goes for)}, deleted if unlinked
    blobs: dict[str, dict[str, tuple[str, XComCoordinate]]] = {}
    for coordinate, ref in items:
        try:
            key = owned_key(store, coordinate, ref)
        except (InvalidReferenceError, PurgeRefusedError) as exc:
            result.refused.append(str(exc))
            continue
        blob = parse_blob_key(key)
        try:
            if blob is None:
                _delete(store, key, result, coordinate, on_delete)
                continue
            _delete(store, coordinate.link_key(ref.digest), result, coordinate, on_delete)
            blobs.setdefault(blob.run_prefix, {})[key] = (hex_of(ref.digest), coordinate)
        except StoreError as exc:
            result.errors.append(f"cannot delete the object of {coordinate}: {exc}")
    for run_prefix, named in blobs.items():
        try:
            doomed, shared = unlinked_blobs(store, run_prefix, ((k, d) for k, (d, _) in named.items()))
            result.kept_shared += len(shared)
            for key in doomed:
                hex_digest, coordinate = named[key]
                if parse_blob_key(key).hex_digest is None and blob_digest_hex(store, key) != hex_digest:  # type: ignore[union-attr]
                    result.refused.append(f"not purging {key!r}: its content is not the digest {hex_digest} "
                                          f"the reference of {coordinate} names")
                    continue
                _delete(store, key, result, coordinate, on_delete)
        except StoreError as exc:
            result.errors.append(f"cannot purge blobs of {run_prefix}: {exc}")
    return result


def blob_digest_hex(store: Store, key: str) -> str | None:
    """The root digest a blob's header records (for a blob kept under a streamed name, whose
    key does not carry it); ``None`` if it cannot be read."""
    try:
        reader = store.open_reader(key)
    except StoreError:
        return None
    try:
        return hex_of(container.read_layout(reader.size, reader.read_at).digest)
    except (StoreError, container.ObjectFormatError):
        return None
    finally:
        reader.close()


def delete_orphan(store: Store, key: str, coordinate: XComCoordinate | None, on_delete: OnDelete | None) -> bool:
    """Delete one object reconcile found no row for (it re-checked it first). Only keys of the
    object layout go (:func:`check_deletable`); True if something was deleted."""
    check_deletable(key)
    result = PurgeResult()
    _delete(store, key, result, coordinate, on_delete)
    return result.deleted > 0


def _delete(
    store: Store, key: str, result: PurgeResult, coordinate: XComCoordinate | None, on_delete: OnDelete | None
) -> None:
    info = store.head(key)
    if info is None:
        return
    store.delete(key)
    result.deleted += 1
    result.deleted_bytes += info.size
    if on_delete is not None:
        on_delete(coordinate, key, info.size)
