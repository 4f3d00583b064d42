"""What the xcom table and the store hold: counts and bytes by DAG, task and codec, inline
against stored, compression, the largest values, and growth per day.

Row-level numbers come from the rows alone (a reference carries size, codec and summary);
the compression ratio needs each object's footer (raw against stored body size), so it is
read from a sample of objects (``layout_sample``; 0 reads none, -1 reads all).
"""

from __future__ import annotations

import heapq
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from xcomstash.format import container
from xcomstash.errors import InvalidReferenceError, StoreError
from xcomstash.maintenance.rows import XComRow, decode_value, reference_or_error
from xcomstash.stores.base import Store


@dataclass
class Bucket:
    inline_count: int = 0
    inline_bytes: int = 0
    stored_count: int = 0
    stored_bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class StatsReport:
    rows: int = 0
    inline: Bucket = field(default_factory=Bucket)  # only inline_* used
    stored: Bucket = field(default_factory=Bucket)  # only stored_* used
    unique_objects: int = 0  # stored bytes counted once per object (dedup)
    unique_bytes: int = 0
    invalid_references: int = 0
    by_dag: dict[str, Bucket] = field(default_factory=dict)
    by_task: dict[str, Bucket] = field(default_factory=dict)
    by_codec: dict[str, list[int]] = field(default_factory=dict)
    by_day: dict[str, Bucket] = field(default_factory=dict)
    largest: list[tuple[int, int, str, dict[str, Any]]] = field(default_factory=list)
    layouts_read: int = 0
    raw_bytes: int = 0  # uncompressed payload of the objects read
    body_bytes: int = 0  # their stored (compressed) payload
    seconds: float = 0.0

    @property
    def compression_ratio(self) -> float | None:
        return round(self.raw_bytes / self.body_bytes, 3) if self.body_bytes else None

    def to_json(self, top: int = 20) -> dict[str, Any]:
        def ranked(groups: dict[str, Bucket]) -> dict[str, Any]:
            order = sorted(groups.items(), key=lambda kv: -(kv[1].stored_bytes + kv[1].inline_bytes))
            return {k: v.to_json() for k, v in order[:top]}

        return {
            "rows": self.rows,
            "inline": {"count": self.inline.inline_count, "bytes": self.inline.inline_bytes},
            "stored": {
                "count": self.stored.stored_count,
                "bytes": self.stored.stored_bytes,
                "unique_objects": self.unique_objects,
                "unique_bytes": self.unique_bytes,
            },
            "invalid_references": self.invalid_references,
            "compression": {
                "objects_sampled": self.layouts_read,
                "raw_bytes": self.raw_bytes,
                "stored_bytes": self.body_bytes,
                "ratio": self.compression_ratio,
            },
            "by_dag": ranked(self.by_dag),
            "by_task": ranked(self.by_task),
            "by_codec": {
                k: {"count": c, "bytes": b}
                for k, (c, b) in sorted(self.by_codec.items(), key=lambda kv: -kv[1][1])
            },
            "by_day": {k: v.to_json() for k, v in sorted(self.by_day.items())},
            "largest": [
                {"bytes": size, "summary": summary, "xcom": xcom}
                for size, _, summary, xcom in sorted(self.largest, key=lambda t: (-t[0], t[1]))
            ],
            "seconds": round(self.seconds, 3),
        }


def collect(
    rows: Iterable[XComRow],
    store: Store | None = None,
    *,
    top: int = 10,
    layout_sample: int = 200,
    progress: Callable[[str, int], None] | None = None,
) -> StatsReport:
    report = StatsReport()
    started = time.perf_counter()
    seen: set[int] = set()
    sample: list[str] = []
    counter = 0
    for row in rows:
        report.rows += 1
        if progress is not None:
            progress("rows", 1)
        c = row.coordinate
        buckets = [
            report.by_dag.setdefault(c.dag_id, Bucket()),
            report.by_task.setdefault(f"{c.dag_id}.{c.task_id}", Bucket()),
        ]
        if row.timestamp is not None:
            buckets.append(report.by_day.setdefault(row.timestamp.strftime("%Y-%m-%d"), Bucket()))
        ref, error = reference_or_error(row.value)
        if error is not None:
            report.invalid_references += 1
            continue
        if ref is None:
            size = len(json.dumps(decode_value(row.value), default=str))
            report.inline.inline_count += 1
            report.inline.inline_bytes += size
            for b in buckets:
                b.inline_count += 1
                b.inline_bytes += size
            codec = report.by_codec.setdefault("inline (json)", [0, 0])
            codec[0] += 1
            codec[1] += size
            continue
        size = ref.size
        report.stored.stored_count += 1
        report.stored.stored_bytes += size
        for b in buckets:
            b.stored_count += 1
            b.stored_bytes += size
        codec = report.by_codec.setdefault(ref.codec, [0, 0])
        codec[0] += 1
        codec[1] += size
        marker = hash(ref.uri)
        if marker not in seen:
            seen.add(marker)
            report.unique_objects += 1
            report.unique_bytes += size
            counter += 1
            # Reservoir sample of objects for the compression ratio.
            if layout_sample < 0 or len(sample) < layout_sample:
                sample.append(ref.uri)
            else:
                import random

                j = random.randrange(counter)
                if j < layout_sample:
                    sample[j] = ref.uri
        entry = (size, report.rows, ref.summary, c.as_dict())  # rows: a unique tie-breaker
        if len(report.largest) < top:
            heapq.heappush(report.largest, entry)  # type: ignore[misc]
        elif size > report.largest[0][0]:
            heapq.heapreplace(report.largest, entry)  # type: ignore[misc]
    if store is not None:
        for uri in sample:
            try:
                reader = store.open_reader(store.key_for(uri))
            except (StoreError, InvalidReferenceError):
                continue
            try:
                layout = container.read_layout(reader.size, reader.read_at)
            except (container.ObjectFormatError, StoreError):
                continue
            finally:
                reader.close()
            report.layouts_read += 1
            report.raw_bytes += layout.raw_size
            report.body_bytes += layout.body_size
    report.seconds = time.perf_counter() - started
    return report


def location_usage(store: Store) -> dict[str, dict[str, int]]:
    """Objects and bytes each location holds, by listing it: with several locations
    (replicas, per-DAG stores) what each one holds, so a location that fell behind shows.
    Empty for a store with one location (the row-based totals say it all)."""
    from xcomstash.format.keyspace import is_reserved
    from xcomstash.pipeline.repair import _unwrapped

    inner = _unwrapped(store)
    groups = [_unwrapped(s) for s in getattr(inner, "stores", (inner,))]
    locations = [loc for g in groups for loc in getattr(g, "locations", (g,))]
    if len(locations) < 2:
        return {}
    usage: dict[str, dict[str, int]] = {}
    for loc in locations:
        count = size = 0
        try:
            for info in loc.list():
                if is_reserved(info.key):
                    continue
                count += 1
                size += info.size
        except StoreError as exc:
            usage[loc.root_uri] = {"objects": -1, "bytes": -1, "error": str(exc)[:300]}  # type: ignore[dict-item]
            continue
        usage[loc.root_uri] = {"objects": count, "bytes": size}
    return usage