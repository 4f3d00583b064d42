"""FaultyStore: each fault does what it says, only where and as often as asked, and faults
reach every read path (get, open_reader, every read source, including a cache's)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from tests.stores.pulling import pull
from tests.stores.test_wrapper import local_raw_names
from xcomstash.errors import ObjectMissingError, ReadError, StoreReadError, StoreUnavailableError
from xcomstash.stores import CachingStore, FaultyStore, LocalStore
from xcomstash.testing import StoreContract, read_via_sources, write

KEY = "d/r/t/0/v.xcs"
DATA = bytes(range(256)) * 4  # 1 KiB


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def inner(root: Path) -> LocalStore:
    store = LocalStore(root)
    write(store, KEY, DATA)
    return store


def read_all(store: FaultyStore, key: str = KEY) -> bytes:
    reader = store.open_reader(key)
    try:
        return reader.read_at(0, reader.size)
    finally:
        reader.close()


class TestFaultyStoreWithoutFaultsContract(StoreContract):
    """With no fault switched on, a FaultyStore is just its inner store."""

    @pytest.fixture
    def store(self, root: Path) -> FaultyStore:
        return FaultyStore(LocalStore(root))

    @pytest.fixture
    def raw_names(self, root: Path) -> Callable[[], list[str]]:
        return local_raw_names(root)


# ------------------------------------------------------------------ fail_reads


def test_fail_reads_true_fails_every_read_path_as_unavailable(inner: LocalStore) -> None:
    store = FaultyStore(inner, fail_reads=True)
    for read in (lambda: store.get(KEY), lambda: read_all(store), lambda: read_via_sources(store, KEY)):
        with pytest.raises(StoreUnavailableError) as info:
            read()
        assert isinstance(info.value, StoreReadError)
        assert info.value.uri == store.uri_for(KEY)  # says where, like a real failure
    assert store.faults == 3
    # metadata and writes are not reads: they still work
    assert store.head(KEY) is not None
    assert [i.key for i in store.list()] == [KEY]
    write(store, "other.xcs", b"x")
    assert inner.get("other.xcs") == b"x"


def test_fail_reads_count_fails_only_the_first_n_reads(inner: LocalStore) -> None:
    store = FaultyStore(inner, fail_reads=2)
    for _ in range(2):
        with pytest.raises(StoreUnavailableError):
            store.get(KEY)
    assert store.get(KEY) == DATA
    assert read_all(store) == DATA
    assert store.faults == 2


def test_fail_reads_false_and_zero_fail_nothing(inner: LocalStore) -> None:
    assert FaultyStore(inner, fail_reads=False).get(KEY) == DATA
    assert FaultyStore(inner, fail_reads=0).get(KEY) == DATA


def test_missing_object_is_still_missing_not_unavailable(inner: LocalStore) -> None:
    store = FaultyStore(inner, corrupt_reads=True)
    with pytest.raises(ObjectMissingError):
        store.get("no/such.xcs")


# ------------------------------------------------------------------ fail_writes


def test_fail_writes_publishes_nothing_and_leaves_the_old_object(inner: LocalStore, root: Path) -> None:
    store = FaultyStore(inner, fail_writes=True)
    with pytest.raises(StoreUnavailableError):
        write(store, KEY, b"the new version")
    with pytest.raises(StoreUnavailableError):
        write(store, "new/object.xcs", b"never visible")
    assert inner.get(KEY) == DATA
    assert inner.head("new/object.xcs") is None
    assert local_raw_names(root)() == [KEY]  # no temporary file left behind
    assert store.faults == 2


def test_fail_writes_applies_to_publish_under_another_key(inner: LocalStore) -> None:
    store = FaultyStore(inner, fail_writes=1)
    with pytest.raises(StoreUnavailableError):
        with store.new_object("staging.xcs") as pending:
            pending.write(b"content-addressed")
            pending.publish("blobs/abc.xcs")
    assert inner.head("blobs/abc.xcs") is None
    with store.new_object("staging.xcs") as pending:  # the budget of one is spent
        pending.write(b"content-addressed")
        assert pending.staged_key == "staging.xcs" and pending.cheap_publish
        pending.publish("blobs/abc.xcs")
    assert inner.get("blobs/abc.xcs") == b"content-addressed"


# ------------------------------------------------------------------ corrupt_reads


def test_corrupt_reads_flips_the_last_byte_by_default(inner: LocalStore) -> None:
    store = FaultyStore(inner, corrupt_reads=True)
    served = store.get(KEY)
    assert len(served) == len(DATA)
    assert served[:-1] == DATA[:-1] and served[-1] == DATA[-1] ^ 0xFF
    assert read_all(store) == served
    assert read_via_sources(store, KEY)[1] == served


@pytest.mark.parametrize("offset, position", [(0, 0), (100, 100), (-2, len(DATA) - 2)])
def test_corrupt_offset_chooses_the_byte(inner: LocalStore, offset: int, position: int) -> None:
    store = FaultyStore(inner, corrupt_reads=True, corrupt_offset=offset)
    served = read_all(store)
    assert [i for i in range(len(DATA)) if served[i] != DATA[i]] == [position]


def test_corrupt_byte_is_flipped_in_ranged_reads_that_cover_it_only(inner: LocalStore) -> None:
    store = FaultyStore(inner, corrupt_reads=True, corrupt_offset=100)
    reader = store.open_reader(KEY)
    try:
        assert reader.read_at(0, 100) == DATA[:100]
        assert reader.read_at(101, 50) == DATA[101:151]
        target = bytearray(10)
        assert reader.readinto_at(95, memoryview(target)) == 10
        assert target[5] == DATA[100] ^ 0xFF and bytes(target[:5]) == DATA[95:100]
    finally:
        reader.close()


def test_corrupt_reads_count_damages_only_the_first_n_readers(inner: LocalStore) -> None:
    store = FaultyStore(inner, corrupt_reads=1)
    assert store.get(KEY) != DATA
    assert store.get(KEY) == DATA
    assert store.faults == 1


def test_corrupting_an_empty_object_serves_it_empty(inner: LocalStore) -> None:
    write(inner, "empty.xcs", b"")
    assert FaultyStore(inner, corrupt_reads=True).get("empty.xcs") == b""


# ------------------------------------------------------------------ truncate_reads


def test_truncate_reads_serves_half_the_object_by_default(inner: LocalStore) -> None:
    store = FaultyStore(inner, truncate_reads=True)
    reader = store.open_reader(KEY)
    try:
        assert reader.size == len(DATA) // 2
        assert reader.read_at(0, len(DATA)) == DATA[: len(DATA) // 2]
        assert reader.read_at(len(DATA) // 2, 10) == b""
    finally:
        reader.close()


def test_truncate_to_keeps_that_many_bytes(inner: LocalStore) -> None:
    store = FaultyStore(inner, truncate_reads=1, truncate_to=3)
    assert store.get(KEY) == DATA[:3]
    assert store.get(KEY) == DATA  # only the first read
    assert FaultyStore(inner, truncate_reads=True, truncate_to=10**9).get(KEY) == DATA


# ------------------------------------------------------------------ delay


def test_delay_slows_every_open_and_read(inner: LocalStore) -> None:
    store = FaultyStore(inner, delay=0.05)
    started = time.monotonic()
    reader = store.open_reader(KEY)  # one open
    reader.read_at(0, 10)  # and two reads
    reader.read_at(10, 10)
    reader.close()
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    assert store.head(KEY) is not None  # metadata is not slowed
    assert time.monotonic() - started < 0.05


# ------------------------------------------------------------------ fail_after_bytes_read


def test_fail_after_bytes_read_dies_mid_object_and_stays_dead(inner: LocalStore) -> None:
    store = FaultyStore(inner, fail_after_bytes_read=600)
    reader = store.open_reader(KEY)
    try:
        assert reader.read_at(0, 500) == DATA[:500]
        assert reader.read_at(500, 100) == DATA[500:600]  # exactly the limit: still served
        with pytest.raises(StoreReadError) as info:
            reader.read_at(600, 100)
        assert info.value.uri == store.uri_for(KEY)
        with pytest.raises(StoreReadError):
            reader.read_at(0, 1)  # dead: even bytes it served before
    finally:
        reader.close()
    with pytest.raises(StoreUnavailableError):
        store.open_reader(KEY)
    assert store.bytes_read == 600


def test_fail_after_bytes_read_fails_opens_once_the_limit_was_served(inner: LocalStore) -> None:
    store = FaultyStore(inner, fail_after_bytes_read=len(DATA))
    assert store.get(KEY) == DATA
    with pytest.raises(StoreUnavailableError):
        store.get(KEY)


# ------------------------------------------------------------------ only_keys


def test_only_keys_limits_every_fault_to_matching_keys(inner: LocalStore) -> None:
    write(inner, "safe/v.xcs", b"safe")
    store = FaultyStore(
        inner,
        fail_reads=True,
        fail_writes=True,
        only_keys=lambda key: key.startswith("d/"),
    )
    assert store.get("safe/v.xcs") == b"safe"
    assert read_via_sources(store, "safe/v.xcs") == ("store", b"safe")
    write(store, "safe/w.xcs", b"written")
    with pytest.raises(StoreUnavailableError):
        store.get(KEY)
    with pytest.raises(StoreUnavailableError):
        write(store, "d/new.xcs", b"x")
    assert store.faults == 2


# ------------------------------------------------------------------ composition


def test_read_sources_wrap_every_inner_source_including_a_cache(inner: LocalStore, tmp_path: Path) -> None:
    cached = CachingStore(inner, tmp_path / "cache", 1 << 20)
    read_via_sources(cached, KEY)  # fill the cache
    store = FaultyStore(cached, corrupt_reads=True)
    assert [s.name for s in store.read_sources(KEY)] == ["cache", "store"]
    name, served = read_via_sources(store, KEY)
    assert name == "cache" and served != DATA  # the cache's bytes were damaged on the way out
    assert cached.path_for(KEY).read_bytes() == DATA  # (the entry itself is fine)


def test_read_failover_past_a_failing_source(inner: LocalStore, tmp_path: Path) -> None:
    """The first source (the cache) is down; the pull path goes on to the store."""
    cached = CachingStore(inner, tmp_path / "cache", 1 << 20)
    read_via_sources(cached, KEY)
    store = FaultyStore(cached, fail_reads=1)
    pulled = pull(store, KEY, DATA)
    assert (pulled.failed, pulled.source) == (["cache"], "store")


def test_cache_in_front_of_a_corrupting_store_repairs_itself(inner: LocalStore, tmp_path: Path) -> None:
    """The store served damaged bytes once: the damaged fill is discarded, evicting the entry,
    and the next read fills it correctly."""
    store = CachingStore(FaultyStore(inner, corrupt_reads=1), tmp_path / "cache", 1 << 20)
    with pytest.raises(ReadError):
        pull(store, KEY, DATA)  # the only copy anywhere was damaged on the way
    assert not store.path_for(KEY).exists()  # discarded, not kept to be served again
    pulled = pull(store, KEY, DATA)
    assert pulled.source == "store" and pulled.data == DATA
    assert pull(store, KEY, DATA).source == "cache"


@pytest.mark.parametrize(
    "options",
    [
        {"fail_reads": -1},
        {"fail_writes": "yes"},
        {"corrupt_reads": 1.5},
        {"delay": -0.1},
        {"truncate_to": -1},
        {"fail_after_bytes_read": -1},
    ],
)
def test_invalid_options_are_refused(inner: LocalStore, options: dict) -> None:
    with pytest.raises(ValueError):
        FaultyStore(inner, **options)
