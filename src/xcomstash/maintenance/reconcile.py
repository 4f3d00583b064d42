"""Reconcile the store against the xcom table: delete what no row references, report what
rows reference but the store lacks.

Why it exists: clearing a task, deleting a run and ``airflow db clean`` delete xcom rows
without calling the XCom backend, so their objects stay behind. An object is *alive* iff at
least one row's reference names it (several rows may share one content-addressed blob); a
link is alive iff its own XCom's row references the link's blob.

How it stays safe while Airflow runs:

- **grace period**: only objects last modified more than ``grace`` ago are collected, so an
  object whose task has not recorded its row yet (or is being retried) is left alone. A blob's
  age is that of its newest link, so a fresh push that reuses an old blob protects it.
- **ages against a cutoff fixed at the start** (start - grace), before the rows are read and
  the store is listed (the two run concurrently): a row recorded after the rows were read
  belongs to an object written after the cutoff, which is therefore kept.
- **re-check before deleting**: every candidate is looked at again (``head``) and skipped if it
  was rewritten since it was listed; a blob is deleted only when, after its orphan links are
  gone, no link to it is left in its run.
- **idempotent and resumable**: every decision is made from the current state; an interrupted
  run just leaves work for the next one, and deleting twice is harmless.

Memory stays bounded: the live set holds one 64-bit hash per referenced key (a collision can
only keep an orphan, never delete a live object), and the listing is streamed and decided one
DAG run (``<dag>/<run>/``) at a time.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from xcomstash.format import container
from xcomstash.coordinate import XComCoordinate, hex_of, is_blob_key, parse_blob_key, parse_link_key
from xcomstash.errors import InvalidReferenceError, StoreError
from xcomstash.maintenance.listing import BackgroundListing
from xcomstash.format.keyspace import KeyKind, classify, dag_of, is_reserved, run_group, xcom_of_key
from xcomstash.maintenance.report import SAMPLE_SIZE, Tally, iso
from xcomstash.maintenance.rows import XComRow, decode_value, reference_or_error
from xcomstash.format.reference import MARKER
from xcomstash.errors import PurgeRefusedError
from xcomstash.pipeline.purge import OnDelete, delete_orphan, unlinked_blobs
from xcomstash.stores.base import ObjectInfo, Store

DEFAULT_GRACE_SECONDS = 6 * 3600
#: Deletions in flight at once on remote stores.
DELETE_WORKERS = 8
#: The longest an unfinished upload is kept by default (see ``ReconcileOptions``).
DEFAULT_UNFINISHED_GRACE_SECONDS = 3600.0

Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class ReconcileOptions:
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    dry_run: bool = False
    #: Only list (and so only collect) objects under this key prefix, e.g. one DAG's.
    prefix: str = ""
    #: Wall-clock "now" (POSIX seconds); tests pin it, operators never need to.
    now: float | None = None
    #: Look up each missing object's row to report it (a second pass over the rows).
    report_missing: bool = True
    #: Unfinished uploads (temporary files, multipart uploads, staged blocks) are collected once
    #: older than this (default: the grace period, at most an hour). No live push outlasts its
    #: ``push_timeout`` (10 minutes by default), so an hour-old upload is a killed writer's, and
    #: a full disk is freed of it long before committed objects become collectable.
    unfinished_grace_seconds: float | None = None


@dataclass
class Missing:
    coordinate: dict[str, Any]
    uri: str

    def to_json(self) -> dict[str, Any]:
        return {"xcom": self.coordinate, "uri": self.uri}


@dataclass
class ReconcileReport:
    dry_run: bool
    grace_seconds: float
    cutoff: float
    rows_scanned: int = 0
    references: int = 0
    invalid_references: int = 0
    invalid: list[str] = field(default_factory=list)
    outside_store: int = 0
    listed: int = 0
    listed_bytes: int = 0
    live: Tally = field(default_factory=Tally)
    orphans: Tally = field(default_factory=Tally)  # collected (or would be, in a dry run)
    young_orphans: Tally = field(default_factory=Tally)  # unreferenced but within the grace period
    foreign: Tally = field(default_factory=Tally)  # not our keys: never touched
    kept_on_recheck: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    missing: list[Missing] = field(default_factory=list)
    missing_count: int = 0
    rows_without_link: int = 0
    #: Uploads killed writers left unfinished (S3 multipart, staged blocks, temporary files):
    #: removed once older than the grace period (or would be, in a dry run).
    unfinished: Tally = field(default_factory=Tally)
    young_unfinished: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and self.missing_count == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "cutoff": iso(self.cutoff),
            "rows_scanned": self.rows_scanned,
            "references": self.references,
            "invalid_references": {"count": self.invalid_references, "sample": list(self.invalid)},
            "references_outside_store": self.outside_store,
            "listed": {"count": self.listed, "bytes": self.listed_bytes},
            "live": {"count": self.live.count, "bytes": self.live.bytes},
            "orphans": self.orphans.to_json(),
            "young_orphans": self.young_orphans.to_json(),
            "foreign": self.foreign.to_json(),
            "kept_on_recheck": self.kept_on_recheck,
            "deleted": {"count": self.deleted, "bytes": self.deleted_bytes},
            "missing": {
                "count": self.missing_count,
                "sample": [m.to_json() for m in self.missing],
            },
            "rows_without_link": self.rows_without_link,
            "unfinished_uploads": self.unfinished.to_json() | {"younger_than_grace": self.young_unfinished},
            "errors": list(self.errors),
            "seconds": round(self.seconds, 3),
        }


def store_roots(store: Store) -> list[str]:
    """The roots whose URIs a store serves: one, or each per-DAG store's (longest first)."""
    inner: Any = store
    while not hasattr(inner, "stores") and hasattr(inner, "inner"):
        inner = inner.inner  # a wrapper (cache, faults) around a routed store
    roots = [s.root_uri for s in getattr(inner, "stores", (store,))]
    return sorted(roots, key=len, reverse=True)


def live_keys(
    rows: Iterable[XComRow], store: Store, report: ReconcileReport, progress: Progress | None = None
) -> set[int]:
    """Hashes of every key the rows keep alive: referenced objects and their rows' links.

    Deliberately lenient: any row carrying the marker protects the URI it names, valid
    reference or not (``xcomstash verify`` is the command that validates references), so
    reconcile never deletes what a row might point at. (Key components are encoded once per
    distinct string, see :func:`~xcomstash.coordinate.encode_component`: a million rows share
    a few thousand DAG, run, task and key names.)
    """
    live: set[int] = set()
    # Every root the store serves (per-DAG stores have several; replicas share the first's).
    roots = [root + "/" for root in store_roots(store)]
    scanned = 0
    for row in rows:
        scanned += 1
        if progress is not None and scanned % 10000 == 0:
            progress("rows", 10000)
        value = row.value
        if not isinstance(value, dict):
            value = decode_value(value)
            if not isinstance(value, dict):
                continue
        if MARKER not in value:
            continue
        uri = value.get("uri")
        if not isinstance(uri, str):
            report.invalid_references += 1
            if len(report.invalid) < SAMPLE_SIZE:
                report.invalid.append(f"{row.coordinate}: reference without a uri")
            continue
        report.references += 1
        root = next((r for r in roots if uri.startswith(r)), None)
        if root is None:
            report.outside_store += 1
            continue
        key = uri[len(root):]
        live.add(hash(key))
        digest = value.get("digest")
        if isinstance(digest, str) and is_blob_key(key):
            live.add(hash(row.coordinate.link_key(digest)))
    report.rows_scanned += scanned
    if progress is not None:
        progress("rows", scanned % 10000)
    return live


class Reconciler:
    """One reconcile pass: rows snapshot, streamed listing, per-run decisions, re-checked deletes."""

    def __init__(
        self,
        store: Store,
        options: ReconcileOptions = ReconcileOptions(),
        progress: Progress | None = None,
        confirm: Callable[[XComCoordinate], tuple[bool, Any]] | None = None,
        on_delete: OnDelete | None = None,
    ) -> None:
        """``confirm``: read one row now (``(exists, value)``). Given when the rows did not come
        from one consistent snapshot (the REST API): every candidate link and per-XCom object
        is then checked against its own row before it is deleted. ``on_delete``: told of each
        object deleted (the command audits it). Deletions go through
        :func:`~xcomstash.pipeline.purge.delete_orphan`, which refuses anything outside the
        object layout (the audit log included)."""
        self.store = store
        self.on_delete = on_delete
        self.confirm = confirm
        self.options = options
        self.progress = progress
        now = time.time() if options.now is None else options.now
        self.cutoff = now - options.grace_seconds
        unfinished_grace = options.unfinished_grace_seconds
        if unfinished_grace is None:
            unfinished_grace = min(options.grace_seconds, DEFAULT_UNFINISHED_GRACE_SECONDS)
        self.unfinished_cutoff = now - unfinished_grace
        self.report = ReconcileReport(
            dry_run=options.dry_run, grace_seconds=options.grace_seconds, cutoff=self.cutoff
        )
        self._pool = (
            ThreadPoolExecutor(DELETE_WORKERS, thread_name_prefix="xcomstash-gc")
            if not store.is_local and not options.dry_run
            else None
        )
        self._flushed_groups: set[int] = set()

    def run(self, rows: Iterable[XComRow], rows_again: Callable[[], Iterable[XComRow]] | None = None) -> ReconcileReport:
        """``rows``: the snapshot; ``rows_again``: a fresh pass, used only to name missing objects."""
        started = time.perf_counter()
        # The listing runs concurrently (another process for a local store, a thread for a
        # remote one) while the rows are read: safe because every age is measured against
        # the cutoff fixed before either began (see the module docstring).
        listing = BackgroundListing(self.store, self.options.prefix)
        try:
            live = live_keys(rows, self.store, self.report, self.progress)
            self._reconcile_listing(live, listing)
            if live and rows_again is not None and self.options.report_missing:
                self._report_missing(live, rows_again())
            self._remove_unfinished_uploads()
        finally:
            listing.close()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self.report.seconds = time.perf_counter() - started
        return self.report

    # ------------------------------------------------------------------ listing

    def _reconcile_listing(self, live: set[int], listing: "BackgroundListing") -> None:
        group: list[ObjectInfo] = []
        current: str | None = None
        listed = 0
        try:
            for info in listing:
                listed += 1
                if self.progress is not None and listed % 10000 == 0:
                    self.progress("objects", 10000)
                name = run_group(info.key)
                if name != current:
                    if group:
                        self._decide(current or "", group, live)
                    group, current = [], name
                group.append(info)
            if group:
                self._decide(current or "", group, live)
        except StoreError as exc:
            self.report.errors.append(f"listing the store failed: {exc}")
        if self.progress is not None:
            self.progress("objects", listed % 10000)

    def _decide(self, name: str, group: list[ObjectInfo], live: set[int]) -> None:
        report, cutoff = self.report, self.cutoff
        # A group seen twice means the store did not list runs contiguously: blobs of such a
        # run are kept (their links may be elsewhere in the listing).
        marker = hash(name)
        regrouped = marker in self._flushed_groups
        self._flushed_groups.add(marker)
        newest_link: dict[str, float] = {}
        for info in group:
            link = parse_link_key(info.key)
            if link is not None and info.modified > newest_link.get(link.hex_digest, 0.0):
                newest_link[link.hex_digest] = info.modified
        links: list[ObjectInfo] = []
        others: list[ObjectInfo] = []
        blobs: list[tuple[ObjectInfo, str]] = []
        for info in group:
            report.listed += 1
            report.listed_bytes += info.size
            key = info.key
            if is_reserved(key):
                continue  # the audit log, maintenance records: neither ours to collect nor foreign
            h = hash(key)
            if h in live:
                live.discard(h)
                report.live.count += 1
                report.live.bytes += info.size
                continue
            kind = classify(key)
            if kind is KeyKind.FOREIGN:
                report.foreign.add(key, info.size, info.modified, dag_of(key))
                continue
            age_from = info.modified
            if kind is KeyKind.BLOB:
                blob = parse_blob_key(key)
                assert blob is not None
                hex_digest = blob.hex_digest or self._content_hex(key)
                if hex_digest is None:  # unreadable streamed blob: cannot tell its links
                    age_from = float("inf")
                else:
                    age_from = max(age_from, newest_link.get(hex_digest, 0.0))
                if regrouped:
                    age_from = float("inf")
            if age_from >= cutoff:
                report.young_orphans.add(key, info.size, info.modified, dag_of(key))
                continue
            if kind is KeyKind.LINK:
                links.append(info)
            elif kind is KeyKind.BLOB:
                blobs.append((info, hex_digest))  # type: ignore[arg-type]
            else:
                others.append(info)
        if self.options.dry_run:
            for info in (*links, *others, *(b for b, _ in blobs)):
                report.orphans.add(info.key, info.size, info.modified, dag_of(info.key))
            return
        self._delete_rechecked(links + others)
        if blobs:
            self._delete_blobs(name, blobs)

    def _remove_unfinished_uploads(self) -> None:
        """Uploads a killed writer left behind, older than the unfinished-upload grace period
        (a live writer may still be streaming a younger one)."""
        report = self.report
        try:
            for upload in self.store.unfinished_uploads():
                if upload.started >= self.unfinished_cutoff:
                    report.young_unfinished += 1
                    continue
                if not self.options.dry_run:
                    self.store.remove_unfinished(upload)
                report.unfinished.add(upload.key, upload.size or 0, upload.started, dag_of(upload.key))
        except StoreError as exc:
            report.errors.append(f"cannot list or remove unfinished uploads: {exc}")

    # ----------------------------------------------------------------- deleting

    def _content_hex(self, key: str) -> str | None:
        """The root digest of a blob kept under a random name (a streamed S3 upload): its
        links are named by that digest, not by the blob's key."""
        try:
            reader = self.store.open_reader(key)
            try:
                return hex_of(container.read_layout(reader.size, reader.read_at).digest)
            finally:
                reader.close()
        except (StoreError, container.ObjectFormatError) as exc:
            self.report.errors.append(f"cannot read blob {key}: {exc}")
            return None

    def _delete_rechecked(self, infos: list[ObjectInfo]) -> None:
        if not infos:
            return
        results = (
            self._pool.map(self._delete_one, infos) if self._pool is not None else map(self._delete_one, infos)
        )
        for info, outcome in zip(infos, results):
            self._count(info, outcome)

    def _delete_one(self, info: ObjectInfo) -> str:
        """``deleted``, ``gone`` (someone else deleted it), ``kept`` (rewritten) or an error."""
        try:
            now = self.store.head(info.key)
            if now is None:
                return "gone"
            # (listings may print times with fewer digits than stat gives: compare to 1 ms)
            if now.modified >= self.cutoff or abs(now.modified - info.modified) > 1e-3:
                return "kept"
            if self.confirm is not None and self._still_referenced(info.key):
                return "kept"
            deleted = delete_orphan(self.store, info.key, xcom_of_key(info.key), self.on_delete)
            return "deleted" if deleted else "gone"
        except PurgeRefusedError:
            return "kept"
        except StoreError as exc:
            return f"error: cannot delete {info.key}: {exc}"

    def _still_referenced(self, key: str) -> bool:
        """Whether the XCom a link or per-XCom object belongs to references it right now.
        A key whose XCom cannot be named (shortened components) counts as referenced."""
        coordinate = xcom_of_key(key)
        if coordinate is None:
            return classify(key) is not KeyKind.BLOB
        exists, value = self.confirm(coordinate)  # type: ignore[misc]
        if not exists:
            return False
        ref, error = reference_or_error(value)
        if error is not None:
            return True
        if ref is None:
            return False
        try:
            target = self.store.key_for(ref.uri)
        except InvalidReferenceError:
            return False
        link = parse_link_key(key)
        if link is not None:
            return target == link.blob_key
        return target == key

    def _count(self, info: ObjectInfo, outcome: str) -> None:
        report = self.report
        if outcome == "deleted":
            report.orphans.add(info.key, info.size, info.modified, dag_of(info.key))
            report.deleted += 1
            report.deleted_bytes += info.size
        elif outcome == "gone":
            report.orphans.add(info.key, info.size, info.modified, dag_of(info.key))
        elif outcome == "kept":
            report.kept_on_recheck += 1
        else:
            report.errors.append(outcome)

    def _delete_blobs(self, name: str, blobs: list[tuple[ObjectInfo, str]]) -> None:
        """Delete unreferenced old blobs of one run, unless a link to them is (still) there
        (the same decision purge makes), each re-checked like any other candidate."""
        try:
            doomed, kept = unlinked_blobs(self.store, name, blobs)
        except StoreError as exc:
            self.report.errors.append(f"cannot list the links of {name}: {exc}")
            return
        self.report.kept_on_recheck += len(kept)
        self._delete_rechecked(doomed)

    # ------------------------------------------------------------------ missing

    def _report_missing(self, remaining: set[int], rows: Iterable[XComRow]) -> None:
        """Rows whose object was not listed: confirmed with ``head`` (a row recorded after the
        snapshot, or an object outside ``prefix``, is not reported)."""
        report = self.report
        prefix = self.options.prefix
        for row in rows:
            if not remaining:
                break
            value = decode_value(row.value)
            if not isinstance(value, dict) or MARKER not in value:
                continue
            ref, error = reference_or_error(value)
            if ref is None:
                continue
            try:
                key = self.store.key_for(ref.uri)
            except InvalidReferenceError:
                continue
            h = hash(key)
            if (
                key.startswith(prefix)
                and is_blob_key(key)
                and hash(row.coordinate.link_key(ref.digest)) in remaining
            ):
                report.rows_without_link += 1
            if h not in remaining or not key.startswith(prefix):
                continue
            try:
                present = self.store.head(key) is not None
            except StoreError as exc:
                report.errors.append(f"cannot check {key}: {exc}")
                continue
            if present:
                continue
            report.missing_count += 1
            if len(report.missing) < SAMPLE_SIZE:
                report.missing.append(Missing(row.coordinate.as_dict(), ref.uri))

