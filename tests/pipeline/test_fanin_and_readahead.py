"""The engine's fast paths on a real LocalStore: concurrent fan-in (deserialize_many),
sequential read-ahead of mapped outputs, and frame verification of large values. A fast path
must give exactly what the slow path gives, and fail exactly as the slow path fails."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import wait
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from xcomstash import Engine, IntegrityError, ObjectMissingError, StashConfig, XComCoordinate
from xcomstash.format import container
from xcomstash.format.frames import FRAME_SIZE
from xcomstash.pipeline.readahead import WINDOW
from xcomstash.format.reference import is_reference
from xcomstash.errors import StoreTimeoutError, XComStashError
from xcomstash.observe.events import outcome_of
from xcomstash.pipeline.pools import FANIN_WORKERS
from xcomstash.security.readers import Expected
from xcomstash.stores import FaultyStore, WrapperStore
from xcomstash.stores.base import ReadSource
from xcomstash.stores.local import FileReader


def coord(index: int, task: str = "mapped") -> XComCoordinate:
    return XComCoordinate("fast_dag", "manual__2026-02-02", task, index, "return_value")


def make_engine(root: Path, **config: Any) -> Engine:
    return Engine(StashConfig(store_url=f"file://{root}", **config))


def path_of(stored: dict) -> Path:
    assert stored["uri"].startswith("file://")
    return Path(stored["uri"][len("file://") :])


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def frame_of(i: int) -> pd.DataFrame:
    rng = np.random.default_rng(i)
    rows = 150 + 7 * i
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype="int64") + 1000 * i,
            "x": rng.normal(size=rows),
            "name": [f"item {i}/{j}" for j in range(rows)],
            "flag": rng.integers(0, 2, size=rows).astype(bool),
        }
    )


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    else:
        assert a == b


# ============================================================================ fan-in


@pytest.fixture
def mixed_rows(tmp_path: Path) -> tuple[Engine, list[Any], list[Any]]:
    """30 DataFrames (stored) interleaved with inline values, and a few stored bytes/JSON."""
    engine = make_engine(tmp_path / "store", threshold=2048)
    values: list[Any] = []
    for i in range(30):
        values.append(frame_of(i))
        if i % 3 == 0:
            values.append({"i": i, "tag": f"inline {i}"})
        if i % 5 == 0:
            values.append(i)
        if i % 7 == 0:
            values.append(os.urandom(5000 + i))  # stored bytes
        if i % 11 == 0:
            values.append([f"long json {i}-{j}" for j in range(300)])  # stored JSON
    rows = [engine.serialize(v, coord(n, "mixed")) for n, v in enumerate(values)]
    return engine, values, rows


def test_deserialize_many_equals_one_by_one_for_inline_and_stored_rows(mixed_rows) -> None:
    engine, values, rows = mixed_rows
    stored = [r for r in rows if is_reference(r)]
    assert len(stored) >= 35 and len(stored) < len(rows)  # a real mix
    assert sum(1 for r in rows if isinstance(r, dict) and "summary" in r and r["codec"] == "pandas.arrow-ipc") == 30

    many = engine.deserialize_many(rows)
    one_by_one = [engine.deserialize(r, readahead=False) for r in rows]
    assert len(many) == len(one_by_one) == len(values)
    for got, single, expected in zip(many, one_by_one, values):
        assert_same(got, single)
        assert_same(got, expected)


def test_deserialize_many_keeps_order_when_rows_are_shuffled(mixed_rows) -> None:
    engine, values, rows = mixed_rows
    order = list(np.random.default_rng(7).permutation(len(rows)))
    many = engine.deserialize_many([rows[i] for i in order])
    for got, i in zip(many, order):
        assert_same(got, values[i])


def test_deserialize_many_of_one_reference_many_times(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, threshold=0)
    value = np.arange(100_000, dtype=np.float64)
    row = engine.serialize(value, coord(0))
    results = engine.deserialize_many([row] * 40)
    assert len(results) == 40
    for got in results:
        assert_same(got, value)
    assert len({id(r) for r in results}) == 40  # independent copies, not one shared object


@pytest.mark.parametrize("rows", [[], [1], [{"a": 1}, 2, "x"]], ids=["empty", "one inline", "all inline"])
def test_deserialize_many_without_references(tmp_path: Path, rows: list[Any]) -> None:
    engine = make_engine(tmp_path)
    assert engine.deserialize_many(rows) == rows


def test_deserialize_many_with_a_single_reference(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, threshold=0)
    rows = [5, engine.serialize(b"only one", coord(0))]
    assert engine.deserialize_many([rows[0], {"k": 1}]) == [5, {"k": 1}]
    assert engine.deserialize_many(rows) == [5, b"only one"]


@pytest.mark.parametrize("first_fault", ["deleted", "corrupt"])
def test_deserialize_many_raises_the_first_failing_items_error(tmp_path: Path, first_fault: str) -> None:
    engine = make_engine(tmp_path, threshold=0)
    values = [os.urandom(2000 + i) for i in range(24)]
    rows = [engine.serialize(v, coord(i)) for i, v in enumerate(values)]
    early, late = 6, 17

    def damage(index: int, fault: str) -> None:
        if fault == "deleted":
            path_of(rows[index]).unlink()
        else:
            flip(path_of(rows[index]), rows[index]["size"] // 2)

    second_fault = "corrupt" if first_fault == "deleted" else "deleted"
    damage(early, first_fault)
    damage(late, second_fault)
    expected = ObjectMissingError if first_fault == "deleted" else IntegrityError
    for _ in range(5):  # whatever order the pool finishes in
        with pytest.raises((ObjectMissingError, IntegrityError)) as info:
            engine.deserialize_many(rows)
        assert type(info.value) is expected
        assert info.value.uri == rows[early]["uri"]
        assert info.value.coordinate == coord(early)

    # the failure is not sticky: the good prefix still reads
    assert engine.deserialize_many(rows[:early]) == values[:early]


def test_deserialize_many_raises_for_a_deleted_object_instead_of_partial_results(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, threshold=0)
    rows = [engine.serialize(frame_of(i), coord(i)) for i in range(10)]
    path_of(rows[-1]).unlink()
    with pytest.raises(ObjectMissingError) as info:
        engine.deserialize_many(rows)
    assert info.value.uri == rows[-1]["uri"]


# ============================================================================ read-ahead


def pending(engine: Engine) -> dict:
    """The read-ahead's scheduled fetches, by coordinate; each gives (key read, bytes)
    (engine internals, inspected only)."""
    assert engine._pull.readahead is not None
    return dict(engine._pull.readahead._pending)


def wait_for_prefetches(engine: Engine) -> None:
    wait(list(pending(engine).values()))


N = 14


@pytest.fixture(params=[True, False], ids=["blobs", "per-xcom"])
def mapped(tmp_path: Path, request) -> tuple[Engine, list[bytes], list[dict]]:
    engine = make_engine(tmp_path / "store", threshold=0, dedup=request.param)
    values = [os.urandom(3000 + 100 * i) for i in range(N)]
    rows = [engine.serialize(v, coord(i)) for i, v in enumerate(values)]
    return engine, values, rows


def test_reading_mapped_outputs_one_at_a_time_gives_identical_values(mapped) -> None:
    engine, values, rows = mapped
    for i in range(N):
        got = engine.deserialize(rows[i], coord(i))
        assert type(got) is bytes and got == values[i]


def test_read_ahead_is_scheduled_after_two_consecutive_indexes(mapped) -> None:
    engine, values, rows = mapped
    assert engine.deserialize(rows[0], coord(0)) == values[0]
    assert pending(engine) == {}
    assert engine.deserialize(rows[1], coord(1)) == values[1]
    scheduled = set(pending(engine))
    assert scheduled == {coord(i) for i in range(2, 2 + WINDOW)}
    wait_for_prefetches(engine)
    # each prefetch found the object its XCom references (through its link, or its own key)
    assert {c: f.result()[0] for c, f in pending(engine).items()} == {
        coord(i): engine.store.key_for(rows[i]["uri"]) for i in range(2, 2 + WINDOW)
    }
    wait_for_prefetches(engine)
    for i in range(2, N):
        assert engine.deserialize(rows[i], coord(i)) == values[i]


def test_prefetched_bytes_are_used_for_a_read(mapped) -> None:
    """Proof that a read is served from read-ahead: the object is gone from the store, yet the
    reference still reads (the prefetched bytes verified against its digest)."""
    engine, values, rows = mapped
    engine.deserialize(rows[0], coord(0))
    engine.deserialize(rows[1], coord(1))
    wait_for_prefetches(engine)
    path_of(rows[3]).unlink()
    assert engine.deserialize(rows[2], coord(2)) == values[2]
    assert engine.deserialize(rows[3], coord(3)) == values[3]
    # a second read of the same index has no prefetched copy: the store says it is gone
    with pytest.raises(ObjectMissingError):
        engine.deserialize(rows[3], coord(3))


@pytest.mark.parametrize("same_size", [True, False], ids=["same size", "other size"])
def test_object_overwritten_after_prefetch_reads_the_new_value(mapped, same_size: bool) -> None:
    engine, values, rows = mapped
    assert engine.deserialize(rows[0], coord(0)) == values[0]
    assert engine.deserialize(rows[1], coord(1)) == values[1]
    assert coord(5) in pending(engine)
    wait_for_prefetches(engine)
    _, stale = pending(engine)[coord(5)].result()
    assert stale == path_of(rows[5]).read_bytes()  # the prefetch holds the first attempt's bytes

    # a retry of map index 5 pushes a different value (over the old object, or as a new blob)
    new_value = os.urandom(len(values[5]) if same_size else len(values[5]) + 777)
    new_row = engine.serialize(new_value, coord(5))
    assert new_row["digest"] != rows[5]["digest"]
    assert (new_row["uri"] == rows[5]["uri"]) is (not engine.config.dedup)
    assert (new_row["size"] == rows[5]["size"]) is same_size
    assert path_of(new_row).read_bytes() != stale
    assert pending(engine)[coord(5)].result()[1] == stale  # still the stale copy, about to be taken
    rows[5], values[5] = new_row, new_value

    for i in range(2, N):
        got = engine.deserialize(rows[i], coord(i))
        assert got == values[i], f"map index {i}"
    assert coord(5) not in pending(engine)


def test_read_ahead_disabled_schedules_nothing(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, threshold=0, read_ahead=False)
    assert engine._pull.readahead is None
    values = [os.urandom(100) for _ in range(5)]
    rows = [engine.serialize(v, coord(i)) for i, v in enumerate(values)]
    assert [engine.deserialize(r, coord(i)) for i, r in enumerate(rows)] == values


def test_read_ahead_past_the_last_index_does_not_break_reads(mapped) -> None:
    """Reading the last indexes prefetches keys that do not exist; nothing surfaces."""
    engine, values, rows = mapped
    for i in range(N - 3, N):
        assert engine.deserialize(rows[i], coord(i)) == values[i]
    wait_for_prefetches(engine)
    for i in range(N):  # a second pass, from the start
        assert engine.deserialize(rows[i], coord(i)) == values[i]


# ============================================================================ large values


#: Frames of repetitive data in a large value: together more than 4 MiB.
REPETITIVE_FRAMES = max(1, -(-(4 * 1024 * 1024) // FRAME_SIZE))


def big_value() -> bytes:
    """Over 4 MiB in at least three frames: random (raw), repetitive (zstd), random tail (raw)."""
    repetitive = b"0123456789abcdef" * (REPETITIVE_FRAMES * FRAME_SIZE // 16)
    return os.urandom(FRAME_SIZE) + repetitive + os.urandom(12345)


def layout_of(path: Path) -> container.ObjectLayout:
    with FileReader(path) as reader:
        return container.read_layout(reader.size, reader.read_at)


def test_large_value_with_a_flipped_byte_in_any_frame_raises_integrity_error(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, threshold=0, compression="zstd")
    value = big_value()
    row = engine.serialize(value, coord(0, "big"))
    path = path_of(row)
    layout = layout_of(path)
    assert len(value) > 4 * 1024 * 1024
    assert [f.method for f in layout.frames] == [0] + [1] * REPETITIVE_FRAMES + [0]
    start = layout.body_offset
    for index, frame in enumerate(layout.frames):
        for where in (0, frame.stored_len // 2, frame.stored_len - 1):
            offset = start + where
            flip(path, offset)
            with pytest.raises(IntegrityError) as info:
                engine.deserialize(row)
            assert info.value.uri == row["uri"], (index, where)
            flip(path, offset)  # restore
        start += frame.stored_len
    assert engine.deserialize(row) == value


def test_large_values_read_through_read_ahead_and_fan_in_are_identical(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, threshold=0)
    values = [big_value() for _ in range(3)]
    rows = [engine.serialize(v, coord(i, "big")) for i, v in enumerate(values)]
    assert [engine.deserialize(r, coord(i, "big")) for i, r in enumerate(rows)] == values
    assert engine.deserialize_many(rows) == values


def test_corrupt_large_value_prefetched_by_read_ahead_raises_integrity_error(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, threshold=0)
    values = [big_value() for _ in range(3)]
    rows = [engine.serialize(v, coord(i, "big")) for i, v in enumerate(values)]
    layout = layout_of(path_of(rows[2]))
    flip(path_of(rows[2]), layout.body_offset + layout.frames[0].stored_len + 5)  # in frame 1
    assert engine.deserialize(rows[0], coord(0, "big")) == values[0]
    assert engine.deserialize(rows[1], coord(1, "big")) == values[1]
    assert coord(2, "big") in pending(engine)
    wait_for_prefetches(engine)
    with pytest.raises(IntegrityError):
        engine.deserialize(rows[2], coord(2, "big"))
    with pytest.raises(IntegrityError):
        engine.deserialize_many(rows)


class Recorded:
    """An observer subscriber keeping every event."""

    wants_inline = False

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)


class Concurrency(WrapperStore):
    """Counts how many readers are open at once (each open holds for a moment)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.lock = threading.Lock()
        self.now = self.peak = self.opened = 0

    def read_sources(self, key: str, **kwargs: Any) -> list[ReadSource]:
        return [ReadSource(s.name, self._counted(s.open), s.discard) for s in self.inner.read_sources(key, **kwargs)]

    def _counted(self, open_: Any) -> Any:
        def counted() -> Any:
            with self.lock:
                self.now += 1
                self.opened += 1
                self.peak = max(self.peak, self.now)
            try:
                time.sleep(0.02)
                return open_()
            finally:
                with self.lock:
                    self.now -= 1

        return counted


def test_deserialize_many_fetches_several_objects_at_once_but_at_most_the_fan_in_bound(tmp_path: Path) -> None:
    inner = make_engine(tmp_path, threshold=0)
    rows = [inner.serialize(os.urandom(3000 + i), coord(i)) for i in range(40)]
    store = Concurrency(inner.store)
    engine = Engine(StashConfig(store_url=inner.store.root_uri, threshold=0, read_ahead=False), store)
    assert [len(v) for v in engine.deserialize_many(rows)] == [3000 + i for i in range(40)]
    assert store.opened == 40
    assert 2 <= store.peak <= FANIN_WORKERS


def test_deserialize_many_stops_fetching_at_a_refused_row_and_observes_the_reads_under_way(tmp_path: Path) -> None:
    recorded = Recorded()
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0), subscribers=[recorded])
    rows = [engine.serialize(os.urandom(2000 + i), coord(i)) for i in range(30)]
    rows[5] = dict(rows[5], xcom=dict(rows[5]["xcom"], dag_id="other_dag"))  # another DAG's value
    recorded.events.clear()
    with pytest.raises(XComStashError) as info:
        engine.deserialize_many(rows, expected=Expected(dag_id="fast_dag", run_id="manual__2026-02-02"))
    pulls = [(e.outcome, e.xcom_dict().get("map_index")) for e in recorded.events if e.op == "pull"]
    # rows 0..4 read and observed (ok), row 5 refused and observed, nothing after it fetched
    assert sorted(m for o, m in pulls if o == "ok") == [0, 1, 2, 3, 4]
    assert [o for o, m in pulls if o != "ok"] == [outcome_of(info.value)]
    assert len(pulls) == 6


def test_deserialize_many_from_a_hung_store_fails_within_the_pull_deadline(tmp_path: Path) -> None:
    inner = make_engine(tmp_path, threshold=0)
    rows = [inner.serialize(os.urandom(2000 + i), coord(i)) for i in range(12)]
    slow = Engine(
        StashConfig(store_url=inner.store.root_uri, threshold=0, read_ahead=False, pull_timeout=0.5),
        FaultyStore(inner.store, delay=30),
    )
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match="pull"):
        slow.deserialize_many(rows)
    # the first window of reads times out together: one deadline, not one per row
    assert time.monotonic() - started < 3
