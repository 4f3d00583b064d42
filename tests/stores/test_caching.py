"""CachingStore: a read-through cache that is only ever a copy.

Pinned here: the store contract holds with the cache in front (of a local store and of a real
S3); a hit serves the entry without touching the store; an entry is exactly the store's bytes;
the cache never verifies (a damaged entry is served) but the pull path's discard evicts it and
the next source refills it; the bound holds, least recently used first; instances and processes
share one directory; and a cache that cannot be used never fails a read.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.stores.pulling import pull
from tests.stores.test_wrapper import local_raw_names
from xcomstash.errors import ConfigError, ObjectMissingError, StoreReadError
from xcomstash.stores import (
    CachingStore,
    FaultyStore,
    LocalStore,
    ObjectReader,
    Store,
    WrapperStore,
    caching,
    open_store,
)
from xcomstash.testing import StoreContract, read_via_sources, write

KEY = "dag/run/task/0/value.xcs"
DATA = bytes(range(256)) * 64  # 16 KiB


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def inner(root: Path) -> LocalStore:
    return LocalStore(root)


@pytest.fixture
def store(inner: LocalStore, cache_dir: Path) -> CachingStore:
    return CachingStore(inner, cache_dir, 1 << 20)


def entries(cache_dir: Path) -> list[Path]:
    """Published cache entries (temporary files excluded)."""
    if not cache_dir.exists():
        return []
    return sorted(p for p in cache_dir.glob("*/*") if not p.name.startswith(".tmp-"))


def temp_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*/.tmp-*")) if cache_dir.exists() else []


def cached_bytes(cache_dir: Path) -> int:
    return sum(p.stat().st_size for p in entries(cache_dir))


# ------------------------------------------------------------------ the contract


class TestCachingLocalStoreContract(StoreContract):
    @pytest.fixture
    def store(self, root: Path, cache_dir: Path) -> CachingStore:
        return CachingStore(LocalStore(root), cache_dir, 1 << 20)

    @pytest.fixture
    def raw_names(self, root: Path) -> Callable[[], list[str]]:
        return local_raw_names(root)


@pytest.mark.s3
class TestCachingS3StoreContract(StoreContract):
    @pytest.fixture
    def store(self, s3_client, s3_server, s3_prefix: str, cache_dir: Path) -> CachingStore:
        from xcomstash.stores.s3 import S3Store

        return CachingStore(S3Store(s3_client, s3_server.bucket, s3_prefix), cache_dir, 1 << 20)

    @pytest.fixture
    def raw_names(self, s3_client, s3_server, s3_prefix: str) -> Callable[[], list[str]]:
        def names() -> list[str]:
            found = []
            pages = s3_client.get_paginator("list_objects_v2").paginate(
                Bucket=s3_server.bucket, Prefix=s3_prefix + "/"
            )
            for page in pages:
                found += [o["Key"] for o in page.get("Contents", [])]
            uploads = s3_client.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=s3_prefix + "/")
            found += [f"(upload) {u['Key']}" for u in uploads.get("Uploads", [])]
            return sorted(found)

        return names


# ------------------------------------------------------------------ hits and fills


def test_first_read_fills_and_second_read_is_a_hit(store: CachingStore, cache_dir: Path) -> None:
    write(store, KEY, DATA)
    assert [s.name for s in store.read_sources(KEY)] == ["cache", "store"]
    assert read_via_sources(store, KEY) == ("store", DATA)
    assert (store.hits, store.misses) == (0, 1)
    assert entries(cache_dir) == [store.path_for(KEY)]
    assert read_via_sources(store, KEY) == ("cache", DATA)
    assert (store.hits, store.misses) == (1, 1)


def test_cached_bytes_equal_store_bytes(store: CachingStore, inner: LocalStore) -> None:
    write(store, KEY, DATA)
    read_via_sources(store, KEY)
    assert store.path_for(KEY).read_bytes() == inner.get(KEY) == DATA


def test_multi_chunk_object_is_filled_in_parallel_exactly(
    store: CachingStore, inner: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caching, "FETCH_CHUNK", 1000)  # 17 ranges for 16 KiB + a partial one
    data = os.urandom(16 * 1024 + 123)
    write(store, KEY, data)
    assert read_via_sources(store, KEY) == ("store", data)
    assert store.path_for(KEY).read_bytes() == data
    assert read_via_sources(store, KEY) == ("cache", data)


class _GatedLocalStore(LocalStore):
    """A local store whose readers hold back the ranges starting in ``held`` until ``released``
    is set, and fail the range at ``fail_at`` (a store that stalls or breaks partway through
    an object)."""

    def __init__(self, root: Path, held: range = range(0), fail_at: int | None = None) -> None:
        super().__init__(root)
        self.held, self.fail_at = held, fail_at
        self.released = threading.Event()

    def open_reader(self, key: str) -> ObjectReader:
        reader = super().open_reader(key)
        store = self

        class Gated:
            size = reader.size

            def read_at(self, offset: int, length: int) -> bytes:
                if offset in store.held:
                    assert store.released.wait(30), "the test never released the gate"
                if offset == store.fail_at:
                    raise StoreReadError("injected: the connection dropped", uri=key)
                return reader.read_at(offset, length)

            def readinto_at(self, offset: int, target: memoryview) -> int:
                data = self.read_at(offset, target.nbytes)
                target[: len(data)] = data
                return len(data)

            def close(self) -> None:
                reader.close()

        return Gated()


def _filling(
    root: Path, cache_dir: Path, size: int, **gate: Any
) -> tuple[_GatedLocalStore, CachingStore, bytes, Any]:
    """A cache over a gated store (``gate``: _GatedLocalStore's options, ranges of 1,000
    bytes), an object of ``size`` random bytes in it, and a reader whose fill has started."""
    inner = _GatedLocalStore(root, **gate)
    store = CachingStore(inner, cache_dir, 1 << 20)
    data = os.urandom(size)
    write(store, KEY, data)
    (_, source) = store.read_sources(KEY)
    return inner, store, data, source.open()


def test_a_read_of_filled_ranges_does_not_wait_for_the_rest_of_the_fill(
    root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The footer (last range, fetched first) and the first range are served while the middle
    of the object is still on its way; the entry is published once all of it arrived."""
    monkeypatch.setattr(caching, "FETCH_CHUNK", 1000)
    inner, store, data, reader = _filling(root, cache_dir, 9500, held=range(2000, 9000))
    try:
        assert reader.read_at(0, 2000) == data[:2000]
        assert reader.read_at(9000, 500) == data[9000:]  # the last range came first
        assert entries(cache_dir) == []  # still filling
        inner.released.set()
        target = memoryview(bytearray(9500))
        assert reader.readinto_at(0, target) == 9500 and bytes(target) == data
    finally:
        reader.close()
    assert entries(cache_dir) == [store.path_for(KEY)] and temp_files(cache_dir) == []
    assert read_via_sources(store, KEY) == ("cache", data)


def test_a_store_failing_partway_through_a_fill_fails_the_reads_that_need_the_missing_range(
    root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caching, "FETCH_CHUNK", 1000)
    # the range at 3000 fails once released
    inner, _, data, reader = _filling(root, cache_dir, 9500, held=range(3000, 3001), fail_at=3000)
    try:
        assert reader.read_at(0, 1000) == data[:1000]
        inner.released.set()
        with pytest.raises(StoreReadError, match="connection dropped"):
            reader.read_at(2500, 1000)
    finally:
        reader.close()
    assert entries(cache_dir) == [] and temp_files(cache_dir) == []  # nothing half-filled stays


def test_closing_a_reader_before_its_fill_ends_stops_the_fill_and_leaves_nothing(
    root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caching, "FETCH_CHUNK", 1000)
    # 20 ranges on the 8 fill threads: 4 arrive, the next 8 stall in the store, 8 wait their turn.
    inner, _, _, reader = _filling(root, cache_dir, 19_500, held=range(3000, 19000))
    assert reader.read_at(19_000, 500)  # the fill is under way
    threading.Timer(0.2, inner.released.set).start()  # the stalled ranges finish; no others start
    reader.close()
    assert entries(cache_dir) == [] and temp_files(cache_dir) == []


def test_hit_does_not_touch_the_inner_store(inner: LocalStore, cache_dir: Path) -> None:
    filler = CachingStore(inner, cache_dir, 1 << 20)
    write(filler, KEY, DATA)
    read_via_sources(filler, KEY)
    # The same cache in front of the same store, now down: the entry alone serves the read.
    down = CachingStore(FaultyStore(inner, fail_reads=True), cache_dir, 1 << 20)
    assert pull(down, KEY, DATA).source == "cache"
    with pytest.raises(StoreReadError):
        down.get(KEY)  # (the store really is down)


def test_entries_are_keyed_by_store_uri_so_stores_can_share_a_directory(
    tmp_path: Path, cache_dir: Path
) -> None:
    a = CachingStore(LocalStore(tmp_path / "a"), cache_dir, 1 << 20)
    b = CachingStore(LocalStore(tmp_path / "b"), cache_dir, 1 << 20)
    write(a, KEY, b"from a")
    write(b, KEY, b"from b")
    assert a.path_for(KEY) != b.path_for(KEY)
    assert read_via_sources(a, KEY)[1] == b"from a"
    assert read_via_sources(b, KEY)[1] == b"from b"
    assert read_via_sources(a, KEY) == ("cache", b"from a")
    assert read_via_sources(b, KEY) == ("cache", b"from b")


def test_get_and_open_reader_bypass_the_cache(store: CachingStore) -> None:
    """Maintenance (verify, stats) reads through get/open_reader: it must see the store."""
    write(store, KEY, DATA)
    read_via_sources(store, KEY)
    store.path_for(KEY).write_bytes(b"damaged entry")
    assert store.get(KEY) == DATA
    reader = store.open_reader(KEY)
    try:
        assert reader.read_at(0, reader.size) == DATA
    finally:
        reader.close()
    assert store.hits == 0


# ------------------------------------------------------------------ discard and damage


def test_discard_evicts_and_next_read_refills(store: CachingStore, cache_dir: Path) -> None:
    write(store, KEY, DATA)
    read_via_sources(store, KEY)
    cache_source = store.read_sources(KEY)[0]
    assert cache_source.name == "cache"
    reader = cache_source.open()
    assert reader is not None
    reader.close()
    cache_source.discard()
    assert entries(cache_dir) == []
    assert cache_source.open() is None  # now a miss
    assert read_via_sources(store, KEY) == ("store", DATA)
    assert store.misses == 2
    assert entries(cache_dir) == [store.path_for(KEY)]


def test_discard_of_the_store_source_evicts_the_entry_it_filled(store: CachingStore, cache_dir: Path) -> None:
    """Bytes served by a filling source come from the entry: if they fail verification, the
    entry must go too, or the next read would serve them again from the cache."""
    write(store, KEY, DATA)
    store_source = store.read_sources(KEY)[1]
    reader = store_source.open()
    assert reader is not None
    reader.close()
    assert entries(cache_dir) == [store.path_for(KEY)]
    store_source.discard()
    assert entries(cache_dir) == []


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [flip_a_byte, truncate, empty])
def test_damaged_entry_is_served_but_discard_and_refill_repair_it(
    store: CachingStore, damage: Callable[[Path], None]
) -> None:
    write(store, KEY, DATA)
    read_via_sources(store, KEY)
    damage(store.path_for(KEY))
    # The cache does not verify: that is the pull path's job, done once for every source.
    source, served = read_via_sources(store, KEY)
    assert source == "cache" and served != DATA
    pulled = pull(store, KEY, DATA)
    assert (pulled.discarded, pulled.source, pulled.data) == (["cache"], "store", DATA)
    assert store.path_for(KEY).read_bytes() == DATA  # repaired by the refill
    assert pull(store, KEY, DATA).source == "cache"


def test_object_rewritten_behind_the_cache_is_served_stale_until_discarded(
    store: CachingStore, inner: LocalStore
) -> None:
    """A task retry on another worker rewrites the key in the store, not through this cache."""
    write(store, KEY, b"first attempt")
    read_via_sources(store, KEY)
    write(inner, KEY, b"the retry's value")
    assert read_via_sources(store, KEY) == ("cache", b"first attempt")
    pulled = pull(store, KEY, b"the retry's value")
    assert (pulled.discarded, pulled.source) == (["cache"], "store")
    assert read_via_sources(store, KEY) == ("cache", b"the retry's value")


def test_write_through_the_cache_evicts_this_processes_stale_entry(store: CachingStore) -> None:
    write(store, KEY, b"first")
    read_via_sources(store, KEY)
    write(store, KEY, b"second")
    assert not store.path_for(KEY).exists()
    assert read_via_sources(store, KEY) == ("store", b"second")
    # and through new_object + publish under another key (content addressing)
    with store.new_object("staging.xcs") as pending:
        pending.write(b"third")
        pending.publish(KEY)
    assert read_via_sources(store, KEY) == ("store", b"third")


def test_delete_evicts(store: CachingStore, cache_dir: Path) -> None:
    write(store, KEY, DATA)
    read_via_sources(store, KEY)
    store.delete(KEY)
    assert entries(cache_dir) == []
    with pytest.raises(ObjectMissingError):
        read_via_sources(store, KEY)


def test_evict_of_absent_entry_is_a_no_op(store: CachingStore) -> None:
    store.evict("never/cached.xcs")


# ------------------------------------------------------------------ what is not cached


def test_object_larger_than_max_bytes_is_not_cached(
    inner: LocalStore, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CachingStore(inner, cache_dir, 1000)
    write(store, KEY, DATA)
    with caplog.at_level(logging.WARNING, logger="xcomstash.stores.caching"):
        assert read_via_sources(store, KEY) == ("store", DATA)
        assert read_via_sources(store, KEY) == ("store", DATA)
    assert entries(cache_dir) == [] and temp_files(cache_dir) == []
    assert (store.hits, store.misses) == (0, 2)
    assert len([r for r in caplog.records if "larger than the read cache" in r.message]) == 1
    # knowing the size up front, the cache is not even looked at
    assert [s.name for s in store.read_sources(KEY, size_hint=len(DATA))] == ["store"]
    assert [s.name for s in store.read_sources(KEY, size_hint=10)] == ["cache", "store"]


def test_max_bytes_zero_caches_nothing(inner: LocalStore, cache_dir: Path) -> None:
    store = CachingStore(inner, cache_dir, 0)
    write(store, KEY, DATA)
    assert [s.name for s in store.read_sources(KEY)] == ["store"]
    assert pull(store, KEY, DATA).source == "store"
    assert pull(store, KEY, DATA).source == "store"
    assert not cache_dir.exists() or entries(cache_dir) == []


def test_negative_max_bytes_is_a_config_error(inner: LocalStore, cache_dir: Path) -> None:
    with pytest.raises(ConfigError):
        CachingStore(inner, cache_dir, -1)


def test_object_of_another_size_than_the_hint_is_served_uncached(store: CachingStore, cache_dir: Path) -> None:
    """The reference says how big the object is; a store object of another size is not the one
    referenced (verification will say so), so copying it into the cache would be wasted."""
    write(store, KEY, DATA)
    source = store.read_sources(KEY, size_hint=len(DATA) + 1)[1]
    reader = source.open()
    assert reader is not None
    try:
        assert reader.read_at(0, reader.size) == DATA
    finally:
        reader.close()
    assert entries(cache_dir) == []


class LyingSize(WrapperStore):
    """Readers claim more bytes than they serve: a store that lost the end of an object."""

    def read_sources(self, key: str, *, size_hint: int | None = None, whole: bool = True, prefer=()):  # type: ignore[override]
        from xcomstash.stores import ReadSource

        def open_() -> ObjectReader:
            reader = self.inner.open_reader(key)
            reader.size += 100  # type: ignore[misc]
            return reader

        return [ReadSource("store", open_)]


def test_short_read_from_the_store_is_served_uncached_not_zero_padded(
    root: Path, cache_dir: Path
) -> None:
    store = CachingStore(LyingSize(LocalStore(root)), cache_dir, 1 << 20)
    write(store, KEY, DATA)
    name, served = read_via_sources(store, KEY)
    assert served == DATA  # what the store really has: the pull path sees the size mismatch
    assert entries(cache_dir) == [] and temp_files(cache_dir) == []


# ------------------------------------------------------------------ the bound


def test_lru_bound_is_respected_after_many_fills(inner: LocalStore, cache_dir: Path) -> None:
    store = CachingStore(inner, cache_dir, 10_000)
    for i in range(60):
        key = f"d/r/t/{i}/v.xcs"
        write(store, key, bytes([i]) * 1000)
        assert read_via_sources(store, key)[1] == bytes([i]) * 1000
        assert cached_bytes(cache_dir) <= 10_000
    assert len(entries(cache_dir)) == 10
    # the ten most recent fills are the ones kept
    assert set(entries(cache_dir)) == {store.path_for(f"d/r/t/{i}/v.xcs") for i in range(50, 60)}


def test_eviction_removes_least_recently_used_first(inner: LocalStore, cache_dir: Path) -> None:
    store = CachingStore(inner, cache_dir, 1000)
    for key in ("a.xcs", "b.xcs", "c.xcs"):
        write(store, key, b"x" * 400)
    read_via_sources(store, "a.xcs")
    read_via_sources(store, "b.xcs")
    now = time.time()
    os.utime(store.path_for("a.xcs"), (now - 100, now - 100))
    os.utime(store.path_for("b.xcs"), (now - 50, now - 50))
    assert read_via_sources(store, "a.xcs")[0] == "cache"  # a hit makes "a" the most recent
    read_via_sources(store, "c.xcs")  # 1200 bytes > 1000: the least recently used goes
    assert set(entries(cache_dir)) == {store.path_for("a.xcs"), store.path_for("c.xcs")}


def test_eviction_never_drops_the_entry_just_filled(inner: LocalStore, cache_dir: Path) -> None:
    """Even when every other entry looks more recent (another process's hits, a clock step),
    the fill this read paid for stays: the next read of it is a hit."""
    store = CachingStore(inner, cache_dir, 1000)
    write(store, "a.xcs", b"a" * 600)
    write(store, "b.xcs", b"b" * 600)
    read_via_sources(store, "a.xcs")
    future = time.time() + 100
    os.utime(store.path_for("a.xcs"), (future, future))
    read_via_sources(store, "b.xcs")
    assert entries(cache_dir) == [store.path_for("b.xcs")]


def test_scan_removes_stale_temp_files_of_dead_writers(store: CachingStore, cache_dir: Path) -> None:
    stale = cache_dir / "ab" / ".tmp-dead.part"
    fresh = cache_dir / "ab" / ".tmp-writing.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a killed process")
    fresh.write_bytes(b"another process is filling this")
    old = time.time() - caching.STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    write(store, KEY, DATA)
    read_via_sources(store, KEY)  # the first fill of a process scans
    assert not stale.exists()
    assert fresh.exists()


def test_scan_leaves_files_that_are_not_entries(store: CachingStore, cache_dir: Path) -> None:
    other = cache_dir / "ab" / "notes.txt"
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x" * (2 << 20))  # larger than the whole bound
    write(store, KEY, DATA)
    read_via_sources(store, KEY)
    assert other.exists()


# ------------------------------------------------------------------ sharing


def test_two_instances_on_one_directory_share_entries(inner: LocalStore, cache_dir: Path) -> None:
    first = CachingStore(inner, cache_dir, 1 << 20)
    second = CachingStore(inner, cache_dir, 1 << 20)
    write(first, KEY, DATA)
    assert read_via_sources(first, KEY) == ("store", DATA)
    assert read_via_sources(second, KEY) == ("cache", DATA)
    assert (second.hits, second.misses) == (1, 0)
    # an eviction by one is seen by the other; a reader already open keeps its bytes
    reader = second.open_cached(KEY)
    assert reader is not None
    first.evict(KEY)
    assert reader.read_at(0, reader.size) == DATA
    reader.close()
    assert second.open_cached(KEY) is None


def _read_in_process(root: str, cache_dir: str, key: str, go: object, ready: object) -> tuple[bytes, int, int]:
    store = CachingStore(LocalStore(root), cache_dir, 1 << 22)
    ready.set()  # type: ignore[attr-defined]
    go.wait(30)  # type: ignore[attr-defined]
    data = pull(store, key, Path(root, *key.split("/")).read_bytes()).data
    return data, store.hits, store.misses


def test_processes_share_one_directory(inner: LocalStore, root: Path, cache_dir: Path) -> None:
    data = os.urandom(3 << 20)
    write(inner, KEY, data)
    context = multiprocessing.get_context("spawn")
    readers = 4
    with context.Manager() as manager:
        go = manager.Event()
        ready = [manager.Event() for _ in range(readers)]
        with context.Pool(readers) as pool:
            results = [
                pool.apply_async(_read_in_process, (str(root), str(cache_dir), KEY, go, ready[i]))
                for i in range(readers)
            ]
            for event in ready:
                assert event.wait(60)
            go.set()  # all at once: concurrent fills of one entry
            outcomes = [r.get(timeout=60) for r in results]
    assert [o[0] == data for o in outcomes] == [True] * readers
    assert all(hits + misses == 1 for _, hits, misses in outcomes)
    assert entries(cache_dir) == [CachingStore(inner, cache_dir, 1).path_for(KEY)]
    assert temp_files(cache_dir) == []
    here = CachingStore(inner, cache_dir, 1 << 22)
    assert read_via_sources(here, KEY) == ("cache", data)


# ------------------------------------------------------------------ a cache that fails


def test_unusable_cache_directory_still_reads_from_the_store(
    inner: LocalStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_bytes(b"")  # mkdir beneath it fails, even for root
    store = CachingStore(inner, not_a_dir, 1 << 20)
    write(store, KEY, DATA)
    with caplog.at_level(logging.WARNING, logger="xcomstash.stores.caching"):
        assert pull(store, KEY, DATA).source == "store"
        assert pull(store, KEY, DATA).source == "store"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "read cache unusable" in warnings[0].message  # once, not per read
    store.delete(KEY)  # eviction failing is not an error either


def test_disk_full_during_fill_still_reads_and_leaves_no_temp_file(
    store: CachingStore, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(store, KEY, DATA)

    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(caching.os, "pwrite", full)
    assert pull(store, KEY, DATA).source == "store"
    assert entries(cache_dir) == [] and temp_files(cache_dir) == []
    monkeypatch.undo()
    assert pull(store, KEY, DATA).source == "store"  # works again: this one fills
    assert pull(store, KEY, DATA).source == "cache"


def test_store_failing_mid_fill_fails_that_source_and_leaves_no_entry(
    inner: LocalStore, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(caching, "FETCH_CHUNK", 4096)
    store = CachingStore(FaultyStore(inner, fail_after_bytes_read=10_000), cache_dir, 1 << 20)
    write(store, KEY, DATA)
    with pytest.raises(StoreReadError):
        read_via_sources(store, KEY)
    assert entries(cache_dir) == [] and temp_files(cache_dir) == []


# ------------------------------------------------------------------ lifecycle and wiring


def test_close_stops_fill_threads_and_closes_inner(inner: LocalStore, cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(caching, "FETCH_CHUNK", 1000)
    closed: list[Store] = []

    class Closing(WrapperStore):
        def close(self) -> None:
            closed.append(self)

    store = CachingStore(Closing(inner), cache_dir, 1 << 20)
    write(store, KEY, DATA)
    read_via_sources(store, KEY)
    assert store._pool is not None
    store.close()
    store.close()
    assert store._pool is None
    assert len(closed) == 1


@pytest.mark.s3
def test_open_store_wraps_a_remote_store_in_the_cache(s3_client, s3_prefix: str, cache_dir: Path) -> None:
    from xcomstash.stores.s3 import S3Store

    store = open_store(
        f"s3://xcom/{s3_prefix}",
        clients=lambda location: s3_client,
        cache_dir=str(cache_dir),
        cache_max_bytes=12345,
    )
    assert isinstance(store, CachingStore) and isinstance(store.inner, S3Store)
    assert store.max_bytes == 12345
    assert store.root_uri == f"s3://xcom/{s3_prefix}"
    assert not store.capabilities.local
    plain = open_store(f"s3://xcom/{s3_prefix}", clients=lambda location: s3_client)
    assert isinstance(plain, S3Store)


def test_open_store_never_caches_a_local_store(root: Path, cache_dir: Path) -> None:
    store = open_store(f"file://{root}", cache_dir=str(cache_dir))
    assert isinstance(store, LocalStore)


@pytest.mark.s3
def test_s3_multi_chunk_fill_and_hit(s3_client, s3_server, s3_prefix: str, cache_dir: Path, monkeypatch) -> None:
    from xcomstash.stores.s3 import S3Store

    monkeypatch.setattr(caching, "FETCH_CHUNK", 256 * 1024)
    store = CachingStore(S3Store(s3_client, s3_server.bucket, s3_prefix), cache_dir, 64 << 20)
    data = os.urandom((10 << 20) + 17)  # past the S3 reader's first 8 MiB GET, 41 ranges
    write(store, KEY, data)
    assert pull(store, KEY, data).source == "store"
    assert store.path_for(KEY).read_bytes() == data
    assert pull(store, KEY, data).source == "cache"
    assert (store.hits, store.misses) == (1, 1)
