"""The local read cache in front of a real S3 (SeaweedFS): cached reads are exactly the
uncached ones, a hit never touches S3, a damaged entry is refetched (or fails typed when the
object is gone), eviction keeps the cache within its bound, least recently used first, and
concurrent readers (threads and processes) share one entry safely."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xcomstash import Engine, IntegrityError, ObjectMissingError, ReadError, StashConfig, XComCoordinate
from xcomstash.format import container
from xcomstash.format.frames import FRAME_SIZE
from xcomstash.stores.caching import CachingStore

pytestmark = pytest.mark.s3

BUCKET = "xcom"


def coord(index: int, task: str = "produce") -> XComCoordinate:
    return XComCoordinate("cache_dag", "manual__2026-03-03", task, index, "return_value")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def make_engine(s3_client, s3_prefix: str, cache_dir: Path | None, **config: Any) -> Engine:
    return Engine(
        StashConfig(
            store_url=f"s3://{BUCKET}/{s3_prefix}",
            threshold=0,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            **config,
        ),
        clients=lambda location: s3_client,
    )


@pytest.fixture
def engine(s3_client, s3_prefix: str, cache_dir: Path) -> Engine:
    return make_engine(s3_client, s3_prefix, cache_dir)


def s3_key(row: dict) -> str:
    prefix = f"s3://{BUCKET}/"
    assert row["uri"].startswith(prefix)
    return row["uri"][len(prefix) :]


def s3_bytes(s3_client, row: dict) -> bytes:
    return s3_client.get_object(Bucket=BUCKET, Key=s3_key(row))["Body"].read()


def replace_in_s3(s3_client, engine: Engine, row: dict, other_value: bytes) -> None:
    """Put another valid object's bytes under ``row``'s key (a replaced or swapped object)."""
    other = engine.serialize(other_value, coord(99, "elsewhere"))
    s3_client.put_object(Bucket=BUCKET, Key=s3_key(row), Body=s3_bytes(s3_client, other))


def delete_from_s3(s3_client, row: dict) -> None:
    s3_client.delete_object(Bucket=BUCKET, Key=s3_key(row))
    with pytest.raises(Exception):
        s3_client.head_object(Bucket=BUCKET, Key=s3_key(row))


def entries(cache_dir: Path) -> list[Path]:
    """Published cache entries (temporary files excluded)."""
    if not cache_dir.exists():
        return []
    return sorted(p for p in cache_dir.rglob("*.xcs") if not p.name.startswith(".tmp-"))


def temp_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.rglob(".tmp-*")) if cache_dir.exists() else []


def cache_of(engine: Engine) -> CachingStore:
    assert isinstance(engine.store, CachingStore)
    return engine.store


def entry_for(engine: Engine, row: dict) -> Path:
    return cache_of(engine).path_for(engine.store.key_for(row["uri"]))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def big_value() -> bytes:
    """More than two frames, raw and zstd."""
    return os.urandom(FRAME_SIZE) + b"cache me " * (FRAME_SIZE // 9 + 1) + os.urandom(5000)


# ====================================================================== hits are the same bytes


def test_engine_on_s3_with_a_cache_dir_has_a_cache(engine: Engine, cache_dir: Path) -> None:
    assert isinstance(engine.store, CachingStore)
    assert cache_of(engine).directory == cache_dir
    assert (cache_of(engine).hits, cache_of(engine).misses) == (0, 0)


@pytest.mark.parametrize("kind", ["array", "bytes", "large bytes", "json"])
def test_cached_read_is_identical_to_an_uncached_read(
    s3_client, s3_prefix: str, cache_dir: Path, kind: str
) -> None:
    cached = make_engine(s3_client, s3_prefix, cache_dir)
    uncached = make_engine(s3_client, s3_prefix, None)
    assert not isinstance(uncached.store, CachingStore)
    value: Any = {
        "array": np.random.default_rng(1).normal(size=(300, 40)),
        "bytes": os.urandom(10_000),
        "large bytes": big_value(),
        "json": {"rows": [{"i": i, "s": str(i)} for i in range(500)]},
    }[kind]
    row = cached.serialize(value, coord(0))

    plain = uncached.deserialize(row)
    first = cached.deserialize(row)  # miss: filled from S3
    second = cached.deserialize(row)  # hit
    for got in (first, second):
        if isinstance(value, np.ndarray):
            assert got.dtype == plain.dtype and got.shape == plain.shape
            assert got.tobytes() == plain.tobytes() == value.tobytes()
        else:
            assert type(got) is type(plain) and got == plain == value
    assert (cached.store.hits, cached.store.misses) == (1, 1)
    # the entry is the object, byte for byte
    assert entries(cache_dir) == [entry_for(cached, row)]
    assert entry_for(cached, row).read_bytes() == s3_bytes(s3_client, row)
    assert temp_files(cache_dir) == []


def test_second_read_is_served_from_the_cache_without_s3(
    engine: Engine, s3_client, s3_prefix: str, cache_dir: Path
) -> None:
    value = big_value()
    row = engine.serialize(value, coord(0))
    assert engine.deserialize(row) == value
    assert (cache_of(engine).hits, cache_of(engine).misses) == (0, 1)

    delete_from_s3(s3_client, row)  # S3 can no longer answer
    for n in range(2, 5):
        assert engine.deserialize(row) == value
        assert (cache_of(engine).hits, cache_of(engine).misses) == (n - 1, 1)
    assert engine.deserialize_many([row, row, 7]) == [value, value, 7]

    # a fresh engine (another task process) on the same directory is served too
    other = make_engine(s3_client, s3_prefix, cache_dir)
    assert other.deserialize(row) == value
    assert (other.store.hits, other.store.misses) == (1, 0)


def test_a_miss_reads_s3_and_a_new_reference_is_a_new_entry(engine: Engine, s3_client, cache_dir: Path) -> None:
    first = engine.serialize(b"first attempt " * 100, coord(0))
    assert engine.deserialize(first) == b"first attempt " * 100
    second = engine.serialize(b"second attempt " * 100, coord(0))  # a retry
    assert second["digest"] != first["digest"] and second["uri"] != first["uri"]
    assert engine.deserialize(second) == b"second attempt " * 100
    assert (cache_of(engine).hits, cache_of(engine).misses) == (0, 2)
    assert entries(cache_dir) == sorted([entry_for(engine, first), entry_for(engine, second)])
    # the old reference still reads its own bytes from the cache
    assert engine.deserialize(first) == b"first attempt " * 100


def test_an_object_rewritten_under_the_same_key_is_refetched_not_served_stale(
    s3_client, s3_prefix: str, cache_dir: Path
) -> None:
    """Without dedup a retry rewrites the XCom's object in place: the cached copy of the old
    bytes fails verification against the new reference and is replaced."""
    engine = make_engine(s3_client, s3_prefix, cache_dir, dedup=False)
    first = engine.serialize(b"first attempt " * 100, coord(0))
    assert engine.deserialize(first) == b"first attempt " * 100
    other = make_engine(s3_client, s3_prefix, cache_dir, dedup=False)  # another worker's retry
    second = other.serialize(b"second attempt " * 100, coord(0))
    assert second["uri"] == first["uri"] and second["digest"] != first["digest"]
    assert engine.deserialize(second) == b"second attempt " * 100
    assert entry_for(engine, second).read_bytes() == s3_bytes(s3_client, second)


def test_an_object_that_does_not_match_its_reference_is_not_cached(
    engine: Engine, s3_client, cache_dir: Path
) -> None:
    row = engine.serialize(os.urandom(3000), coord(0))
    replace_in_s3(s3_client, engine, row, os.urandom(4000))
    with pytest.raises(IntegrityError):
        engine.deserialize(row)
    assert entries(cache_dir) == []
    assert temp_files(cache_dir) == []


# ====================================================================== damaged entries


def _regions(data_len: int, body_offset: int) -> dict[str, int]:
    return {"magic": 0, "header": 20, "body": body_offset + 3, "last byte": data_len - 1}


@pytest.mark.parametrize("region", ["magic", "header", "body", "frame 2", "last byte", "truncated", "empty"])
def test_corrupt_cache_entry_is_detected_and_refetched_from_s3(
    engine: Engine, s3_client, cache_dir: Path, region: str
) -> None:
    value = big_value()
    row = engine.serialize(value, coord(0))
    assert engine.deserialize(row) == value
    path = entry_for(engine, row)
    original = path.read_bytes()
    assert original == s3_bytes(s3_client, row)

    layout = container.read_layout(len(original), lambda o, n: original[o : o + n])
    if region == "truncated":
        path.write_bytes(original[:-100])
    elif region == "empty":
        path.write_bytes(b"")
    else:
        offsets = _regions(len(original), layout.body_offset)
        offsets["frame 2"] = layout.body_offset + layout.frames[0].stored_len + layout.frames[1].stored_len // 2
        flip(path, offsets[region])
    assert path.read_bytes() != original

    assert engine.deserialize(row) == value
    assert cache_of(engine).misses == 2  # found damaged, fetched from S3 again
    assert path.read_bytes() == original  # replaced by a good copy
    assert entries(cache_dir) == [path] and temp_files(cache_dir) == []
    hits = cache_of(engine).hits
    assert engine.deserialize(row) == value
    assert (cache_of(engine).hits, cache_of(engine).misses) == (hits + 1, 2)  # the good copy is a hit


def test_corrupt_cache_entry_with_the_object_gone_from_s3_raises_object_missing(
    engine: Engine, s3_client, cache_dir: Path
) -> None:
    value = os.urandom(50_000)
    row = engine.serialize(value, coord(3))
    assert engine.deserialize(row, coord(3)) == value
    path = entry_for(engine, row)
    flip(path, path.stat().st_size // 2)
    delete_from_s3(s3_client, row)

    for _ in range(2):  # and again: no damaged entry comes back as a value
        with pytest.raises(ObjectMissingError) as info:
            engine.deserialize(row, coord(3))
        assert info.value.uri == row["uri"]
        assert info.value.coordinate == coord(3)
    assert not path.exists()  # the damaged entry was dropped
    with pytest.raises(ObjectMissingError):
        engine.deserialize_many([row, row])


def test_corrupt_cache_entry_with_the_object_replaced_in_s3_raises_integrity_error(
    engine: Engine, s3_client, cache_dir: Path
) -> None:
    row = engine.serialize(os.urandom(50_000), coord(0))
    engine.deserialize(row)
    flip(entry_for(engine, row), 100)
    replace_in_s3(s3_client, engine, row, os.urandom(50_000))  # same key, other bytes
    with pytest.raises(IntegrityError) as info:
        engine.deserialize(row)
    assert isinstance(info.value, ReadError) and info.value.uri == row["uri"]
    assert entries(cache_dir) == []


def test_cache_entry_holding_another_objects_bytes_is_refetched(
    engine: Engine, s3_client, cache_dir: Path
) -> None:
    """An entry holding a different (valid) object than its name says fails verification."""
    a = engine.serialize(b"value a" * 1000, coord(0))
    b = engine.serialize(b"value b" * 1000, coord(1))
    engine.deserialize(a)
    engine.deserialize(b)
    entry_for(engine, a).write_bytes(entry_for(engine, b).read_bytes())
    assert engine.deserialize(a) == b"value a" * 1000
    assert entry_for(engine, a).read_bytes() == s3_bytes(s3_client, a)


# ====================================================================== eviction


def same_size_values(count: int, size: int = 20_000) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]  # raw frames: equal object sizes


def set_mtime(path: Path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_eviction_removes_the_least_recently_used_entry(
    s3_client, s3_prefix: str, cache_dir: Path
) -> None:
    probe = make_engine(s3_client, s3_prefix, None)
    values = same_size_values(3)
    rows = [probe.serialize(v, coord(i)) for i, v in enumerate(values)]
    size = rows[0]["size"]
    assert all(r["size"] == size for r in rows)
    engine = make_engine(s3_client, s3_prefix, cache_dir, cache_max_bytes=2 * size + size // 2)
    a, b, c = rows

    assert engine.deserialize(a, readahead=False) == values[0]
    assert engine.deserialize(b, readahead=False) == values[1]
    assert entries(cache_dir) == sorted([entry_for(engine, a), entry_for(engine, b)])
    # Make the order of use unambiguous (file times can be coarser than these reads):
    # a was filled long ago, b a little later ...
    set_mtime(entry_for(engine, a), 300)
    set_mtime(entry_for(engine, b), 200)
    # ... then a is read again: a hit makes it the most recently used.
    assert engine.deserialize(a, readahead=False) == values[0]
    assert cache_of(engine).hits == 1
    assert entry_for(engine, a).stat().st_mtime > entry_for(engine, b).stat().st_mtime

    assert engine.deserialize(c, readahead=False) == values[2]  # does not fit with a and b
    assert entries(cache_dir) == sorted([entry_for(engine, a), entry_for(engine, c)])
    assert sum(p.stat().st_size for p in entries(cache_dir)) <= cache_of(engine).max_bytes

    # b reads again, from S3, and now the least recently used (c or a) makes room
    set_mtime(entry_for(engine, c), 100)
    assert engine.deserialize(b, readahead=False) == values[1]
    assert entries(cache_dir) == sorted([entry_for(engine, a), entry_for(engine, b)])


def test_cache_stays_within_its_bound_over_many_reads(s3_client, s3_prefix: str, cache_dir: Path) -> None:
    probe = make_engine(s3_client, s3_prefix, None)
    values = same_size_values(10, 8000)
    rows = [probe.serialize(v, coord(i)) for i, v in enumerate(values)]
    size = max(r["size"] for r in rows)
    engine = make_engine(s3_client, s3_prefix, cache_dir, cache_max_bytes=3 * size)
    for round_ in range(2):
        for i, row in enumerate(rows):
            assert engine.deserialize(row, readahead=False) == values[i]
            found = entries(cache_dir)
            assert sum(p.stat().st_size for p in found) <= 3 * size
            assert 1 <= len(found) <= 3
            assert entry_for(engine, row) in found  # the entry just read is kept
    assert engine.deserialize_many(rows) == values
    assert sum(p.stat().st_size for p in entries(cache_dir)) <= 3 * size


def test_object_larger_than_the_cache_is_read_from_the_store_and_not_cached(
    s3_client, s3_prefix: str, cache_dir: Path
) -> None:
    engine = make_engine(s3_client, s3_prefix, cache_dir, cache_max_bytes=1000)
    small = engine.serialize(b"s" * 10, coord(0))
    value = os.urandom(100_000)
    large = engine.serialize(value, coord(1))
    assert engine.deserialize(small, readahead=False) == b"s" * 10
    assert engine.deserialize(large, readahead=False) == value
    assert engine.deserialize(large, readahead=False) == value
    assert entry_for(engine, large) not in entries(cache_dir)  # never cached: it cannot fit
    assert entry_for(engine, small) in entries(cache_dir)  # so it evicted nothing
    assert engine.deserialize(small, readahead=False) == b"s" * 10
    assert temp_files(cache_dir) == []


def test_concurrent_fills_into_a_tiny_cache_all_return_the_right_values(
    s3_client, s3_prefix: str, cache_dir: Path
) -> None:
    """Threads filling different entries while each fill evicts the others: a fill must not
    lose its own entry to another thread's eviction before it opens it."""
    engine = make_engine(s3_client, s3_prefix, cache_dir, cache_max_bytes=0)
    values = [os.urandom(3000 + i) for i in range(16)]
    rows = [engine.serialize(v, coord(i)) for i, v in enumerate(values)]
    for _ in range(4):
        assert engine.deserialize_many(rows) == values
    assert temp_files(cache_dir) == []


# ====================================================================== concurrent readers


def test_threads_reading_one_reference_at_once_share_one_entry(engine: Engine, cache_dir: Path) -> None:
    value = big_value()
    row = engine.serialize(value, coord(0))
    threads_n = 6
    barrier = threading.Barrier(threads_n)
    results: list[Any] = [None] * threads_n
    errors: list[BaseException] = []

    def read(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = engine.deserialize(row, readahead=False)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert all(r == value for r in results)
    assert cache_of(engine).hits + cache_of(engine).misses == threads_n
    assert cache_of(engine).misses >= 1
    assert entries(cache_dir) == [entry_for(engine, row)]
    assert temp_files(cache_dir) == []


READER_SCRIPT = r"""
import hashlib, json, os, sys, time
from pathlib import Path

import boto3
from botocore.config import Config

from xcomstash import Engine, StashConfig

go = Path(os.environ["GO_FILE"])
row = json.loads(os.environ["ROW"])
client = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT"],
    aws_access_key_id=os.environ["S3_KEY"],
    aws_secret_access_key=os.environ["S3_SECRET"],
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}),
)
engine = Engine(
    StashConfig(store_url=os.environ["STORE_URL"], cache_dir=os.environ["CACHE_DIR"]),
    clients=lambda location: client,
)
Path(os.environ["READY_FILE"]).touch()
while not go.exists():  # start together with the other readers
    time.sleep(0.005)
value = engine.deserialize(row, readahead=False)
print(json.dumps({
    "sha256": hashlib.sha256(value).hexdigest(),
    "hits": engine.store.hits,
    "misses": engine.store.misses,
}))
"""


def test_processes_reading_one_reference_at_once_share_one_entry(
    engine: Engine, s3_server, s3_client, s3_prefix: str, cache_dir: Path, tmp_path: Path
) -> None:
    value = big_value()
    row = engine.serialize(value, coord(0))
    script = tmp_path / "reader.py"
    script.write_text(READER_SCRIPT)
    go = tmp_path / "go"
    procs = []
    readers = 4
    for i in range(readers):
        env = dict(
            os.environ,
            GO_FILE=str(go),
            READY_FILE=str(tmp_path / f"ready-{i}"),
            ROW=json.dumps(row),
            S3_ENDPOINT=s3_server.endpoint_url,
            S3_KEY=s3_server.access_key,
            S3_SECRET=s3_server.secret_key,
            STORE_URL=f"s3://{BUCKET}/{s3_prefix}",
            CACHE_DIR=str(cache_dir),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{i}").exists() for i in range(readers)):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        go.touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err.decode()[-3000:]
    reports = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    expected = hashlib.sha256(value).hexdigest()
    assert [r["sha256"] for r in reports] == [expected] * readers
    assert all(r["hits"] + r["misses"] == 1 for r in reports)
    assert entries(cache_dir) == [entry_for(engine, row)]
    assert temp_files(cache_dir) == []
    assert entry_for(engine, row).read_bytes() == s3_bytes(s3_client, row)
    # and this process now reads the shared entry as a hit
    assert engine.deserialize(row) == value
    assert (cache_of(engine).hits, cache_of(engine).misses) == (1, 0)


# ====================================================================== partial reads


def test_partial_read_on_a_cold_cache_fetches_part_of_the_object_and_fills_nothing(
    engine: Engine, cache_dir: Path
) -> None:
    import pandas as pd

    df = pd.DataFrame({f"c{i}": np.random.default_rng(i).random(300_000) for i in range(8)})
    row = engine.serialize(df, coord(0))
    part, stats = engine.read_table(row, ["c3"])
    pd.testing.assert_frame_equal(part, df[["c3"]])
    assert stats is not None and stats.bytes_fetched < row["size"] / 2
    assert entries(cache_dir) == []
    # once the whole value was read (and cached), a partial read is served by the cache
    pd.testing.assert_frame_equal(engine.deserialize(row), df)
    hits = cache_of(engine).hits
    part, _ = engine.read_table(row, ["c5"])
    pd.testing.assert_frame_equal(part, df[["c5"]])
    assert cache_of(engine).hits == hits + 1
