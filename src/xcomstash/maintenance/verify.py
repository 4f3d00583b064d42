"""Re-read stored objects and check them against the references that point at them.

Per referenced object: it exists, its size is the reference's, its root digest (header,
frame table, footer) matches, and, in a full check, every frame's SHA-256 (and it
decompresses). Objects shared by several rows (dedup) are read once. Nothing is decoded by a
codec: verify needs no pandas, no pyarrow.
"""

from __future__ import annotations

import dataclasses
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from xcomstash.format import container
from xcomstash.errors import InvalidReferenceError, ObjectMissingError, StoreError
from xcomstash.format.frames import FrameError, verify_stored_frames
from xcomstash.maintenance.report import SAMPLE_SIZE
from xcomstash.maintenance.rows import XComRow, reference_or_error
from xcomstash.format.reference import Reference
from xcomstash.stores.base import Store

OK, MISSING, CORRUPT, UNREADABLE = "ok", "missing", "corrupt", "unreadable"
#: With several locations: intact in some, missing, damaged or unreachable in others
#: (``xcomstash repair`` restores it).
DEGRADED = "degraded"
WORKERS = 4


@dataclass(frozen=True)
class VerifyOptions:
    #: Fraction of referenced objects to check (1.0: all), chosen at random with ``seed``.
    sample: float = 1.0
    seed: int | None = None
    #: Check every frame's digest too (reads every byte), not only size and root digest.
    full: bool = True


@dataclass
class Problem:
    status: str
    xcom: dict[str, Any]
    uri: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "xcom": self.xcom, "uri": self.uri, "detail": self.detail}


@dataclass
class VerifyReport:
    full: bool
    sample: float
    rows_scanned: int = 0
    references: int = 0
    checked_rows: int = 0
    checked_objects: int = 0
    skipped_by_sample: int = 0
    bytes_read: int = 0
    ok: int = 0
    missing: int = 0
    corrupt: int = 0
    unreadable: int = 0  # store errors: could not tell
    degraded: int = 0  # several locations: intact in some, not in all
    invalid_references: int = 0
    problems: list[Problem] = field(default_factory=list)
    orphans: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def healthy(self) -> bool:
        return not (self.missing or self.corrupt or self.unreadable or self.invalid_references or self.degraded)

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in vars(self).items() if k not in ("problems", "seconds")}
        doc["problems"] = [p.to_json() for p in self.problems]
        doc["seconds"] = round(self.seconds, 3)
        return doc


def check_object(store: Store, ref: Reference, full: bool, pool: ThreadPoolExecutor | None = None) -> tuple[str, str, int]:
    """``(status, detail, bytes read)`` for the object ``ref`` names: checked against the
    reference exactly as a pull checks it (:func:`~xcomstash.format.container.verified_layout`),
    then, if ``full``, every frame (an encrypted object's frames only against their digests:
    verify holds no keys)."""
    try:
        key = store.key_for(ref.uri)
        reader = store.open_reader(key)
    except InvalidReferenceError as exc:
        return CORRUPT, str(exc), 0
    except ObjectMissingError:
        return MISSING, "object is missing", 0
    except StoreError as exc:
        return UNREADABLE, str(exc), 0
    try:
        layout = container.verified_layout(reader, ref)
        if not full:
            return OK, "", reader.size - layout.body_size
        own_pool = pool or ThreadPoolExecutor(2)
        try:
            verify_stored_frames(
                layout.frames, layout.body_offset, reader.read_at, own_pool, decode=layout.key_slot is None
            )
        finally:
            if pool is None:
                own_pool.shutdown()
        return OK, "", reader.size
    except (container.ObjectFormatError, FrameError) as exc:
        return CORRUPT, str(exc), 0
    except StoreError as exc:
        return UNREADABLE, str(exc), 0
    finally:
        reader.close()


def check_copies(store: Store, ref: Reference, full: bool, pool: ThreadPoolExecutor | None = None) -> tuple[str, str, int]:
    """:func:`check_object` in every location that should hold the object (one, or each of a
    replicated store's). Intact everywhere: ``ok``; intact somewhere: ``degraded``, naming the
    locations that are not; intact nowhere: the first location's status."""
    from xcomstash.pipeline.move import source_store
    from xcomstash.pipeline.repair import locations_of

    try:
        key = store.key_for(ref.uri)
    except InvalidReferenceError as exc:
        return CORRUPT, str(exc), 0
    # The store the reference names (a previous store, or the default one for a value written
    # before its DAG got a store of its own), not necessarily where its DAG writes now.
    locations = locations_of(source_store(store, ref.uri) or store, key)
    if len(locations) == 1:
        return check_object(locations[0], dataclasses.replace(ref, uri=locations[0].uri_for(key)), full, pool)
    results = [
        (loc, *check_object(loc, dataclasses.replace(ref, uri=loc.uri_for(key)), full, pool)) for loc in locations
    ]
    nbytes = sum(r[3] for r in results)
    bad = [f"{loc.root_uri}: {status} ({detail})" for loc, status, detail, _ in results if status != OK]
    if not bad:
        return OK, "", nbytes
    if len(bad) < len(results):
        return DEGRADED, "; ".join(bad), nbytes
    return results[0][1], "; ".join(bad), nbytes


def verify(
    rows: Iterable[XComRow],
    store: Store,
    options: VerifyOptions = VerifyOptions(),
    progress: Callable[[str, int], None] | None = None,
) -> VerifyReport:
    report = VerifyReport(full=options.full, sample=options.sample)
    started = time.perf_counter()
    rng = random.Random(options.seed)
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    frames_pool = ThreadPoolExecutor(2, thread_name_prefix="xcomstash-verify-frames")

    def candidates() -> Iterator[tuple[XComRow, Reference]]:
        for row in rows:
            report.rows_scanned += 1
            ref, error = reference_or_error(row.value)
            if error is not None:
                report.invalid_references += 1
                _note(report, Problem("invalid", row.coordinate.as_dict(), "", error))
                continue
            if ref is None:
                continue
            report.references += 1
            if options.sample < 1.0 and rng.random() >= options.sample:
                report.skipped_by_sample += 1
                continue
            yield row, ref

    def check(item: tuple[XComRow, Reference]) -> tuple[XComRow, Reference, str, str, int, bool]:
        row, ref = item
        memo = (ref.uri, ref.digest)
        if memo in seen:  # one blob, several rows: read it once
            status, detail = seen[memo]
            return row, ref, status, detail, 0, False
        status, detail, nbytes = check_copies(store, ref, options.full, frames_pool)
        seen[memo] = (status, detail)
        return row, ref, status, detail, nbytes, True

    try:
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="xcomstash-verify") as pool:
            for row, ref, status, detail, nbytes, read in _bounded_map(pool, check, candidates()):
                report.checked_rows += 1
                report.checked_objects += int(read)
                report.bytes_read += nbytes
                if progress is not None:
                    progress("objects", 1)
                if status == OK:
                    report.ok += 1
                    continue
                setattr(report, status, getattr(report, status) + 1)
                _note(report, Problem(status, row.coordinate.as_dict(), ref.uri, detail))
    finally:
        frames_pool.shutdown()
        report.seconds = time.perf_counter() - started
    return report


def _note(report: VerifyReport, problem: Problem) -> None:
    if len(report.problems) < SAMPLE_SIZE * 5:
        report.problems.append(problem)


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable[Any], window: int = 64) -> Iterator[Any]:
    """``pool.map`` that keeps at most ``window`` items in flight (the rows are streamed)."""
    from collections import deque

    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
