"""Events -> metrics (xcomstash.observe.metrics): what each kind of operation is counted, timed
and sized as, and that the engine's stages fill in what the metrics need (raw and stored
bytes, bytes fetched, cache hit or miss, encryption time, the errors met on the way). Real
engines on real local stores, a real read cache, real keys; the sink is a list."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from xcomstash import Engine, IntegrityError, StashConfig, XComCoordinate
from xcomstash.errors import AccessDeniedError, StoreReadError, StoreTimeoutError, ValueTooLargeError
from xcomstash.observe.events import DENIED, FAILED, INLINE, OK, REJECTED, Event, Observer
from xcomstash.observe.metrics import CATALOGUE, COUNTER, GAUGE, TIMER, Metric, MetricsRecorder, metrics_of
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.stores.caching import CachingStore
from xcomstash.stores.local import LocalStore

README = Path(__file__).resolve().parents[2] / "docs" / "ui-and-metrics.md"
COORD = XComCoordinate("etl", "run_1", "extract", -1, "return_value")
TAGS = (("dag_id", "etl"), ("task_id", "extract"))


def named(metrics: list[Metric]) -> dict[str, list[Metric]]:
    out: dict[str, list[Metric]] = {}
    for m in metrics:
        out.setdefault(m.name, []).append(m)
    return out


def values(metrics: list[Metric]) -> dict[str, float]:
    """name -> summed value (every name once per event in these tests, except where summed)."""
    out: dict[str, float] = {}
    for m in metrics:
        out[m.name] = out.get(m.name, 0) + m.value
    return out


class Sink(list):
    def __call__(self, metric: Metric) -> None:
        self.append(metric)


# ------------------------------------------------------------------- pure mapping


def test_a_stored_push_is_counted_timed_sized_with_its_ratio_and_encryption_time() -> None:
    event = Event(
        "push", OK, COORD, size=250, raw_size=1000, seconds=0.5, crypto_seconds=0.002, uri="file:///s/x.xcs"
    )
    metrics = metrics_of(event)
    assert {(m.kind, m.name, m.value) for m in metrics} == {
        (COUNTER, "xcomstash.push.offloaded", 1),
        (TIMER, "xcomstash.push.duration", 500.0),
        (COUNTER, "xcomstash.push.bytes", 1000),
        (COUNTER, "xcomstash.push.stored_bytes", 250),
        (GAUGE, "xcomstash.push.compression_ratio", 4.0),
        (TIMER, "xcomstash.push.encryption", 2.0),
    }
    assert all(m.tags == TAGS for m in metrics)


def test_a_plaintext_push_has_no_encryption_timer() -> None:
    names = {m.name for m in metrics_of(Event("push", OK, COORD, size=10, raw_size=10))}
    assert "xcomstash.push.encryption" not in names and "xcomstash.push.compression_ratio" in names


def test_inline_events_count_one_inline_value_and_nothing_else() -> None:
    for op in ("push", "pull"):
        metrics = metrics_of(Event(op, OK, COORD, route=INLINE, size=12, seconds=0.001))
        assert [(m.kind, m.name, m.value) for m in metrics] == [(COUNTER, f"xcomstash.{op}.inline", 1)]


def test_a_pull_counts_bytes_fetched_not_the_object_size_for_a_partial_read() -> None:
    whole = values(metrics_of(Event("pull", OK, COORD, size=5000, seconds=0.01, source="store")))
    partial = values(metrics_of(Event("pull", OK, COORD, size=5000, fetched=1200, source="store")))
    assert whole["xcomstash.pull.bytes"] == 5000 and partial["xcomstash.pull.bytes"] == 1200
    assert whole["xcomstash.pull.offloaded"] == 1 and whole["xcomstash.pull.duration"] == pytest.approx(10.0)


@pytest.mark.parametrize("cache", ["hit", "miss"])
def test_a_pull_through_the_read_cache_counts_a_hit_or_a_miss(cache: str) -> None:
    names = {m.name for m in metrics_of(Event("pull", OK, COORD, size=10, cache=cache))}
    assert f"xcomstash.cache.{cache}" in names
    assert not {n for n in names if n.startswith("xcomstash.cache.")} - {f"xcomstash.cache.{cache}"}


def test_a_pull_without_a_cache_has_no_cache_metric() -> None:
    assert not [m for m in metrics_of(Event("pull", OK, COORD, size=10)) if "cache" in m.name]


def test_a_pull_that_failed_over_counts_each_source_passed_over_by_error_type() -> None:
    event = Event(
        "pull", OK, COORD, size=10, source="replica:1",
        failover=("cache: IntegrityError", "store: StoreReadError", "replica:0: DecryptionError"),
    )
    got = values(metrics_of(event))
    assert got["xcomstash.pull.failover"] == 3
    # DecryptionError is an IntegrityError: damaged bytes either way
    assert got["xcomstash.integrity_failure"] == 2
    assert got["xcomstash.error.IntegrityError"] == 1
    assert got["xcomstash.error.StoreReadError"] == 1
    assert got["xcomstash.error.DecryptionError"] == 1
    assert "xcomstash.pull.failed" not in got


def test_a_failed_pull_counts_its_last_sources_error_once_and_no_failover_to_nothing() -> None:
    error = IntegrityError("digest mismatch", uri="file:///s/x.xcs")
    event = Event(
        "pull", FAILED, COORD, size=10, error=error, failover=("store: StoreReadError", "replica:0: IntegrityError")
    )
    got = values(metrics_of(event))
    assert got["xcomstash.pull.failed"] == 1
    assert got["xcomstash.pull.failover"] == 1  # the store was passed over; the replica was the last
    assert got["xcomstash.error.IntegrityError"] == 1 and got["xcomstash.error.StoreReadError"] == 1
    assert got["xcomstash.integrity_failure"] == 1
    assert "xcomstash.pull.offloaded" not in got and "xcomstash.pull.bytes" not in got


def test_a_failed_push_counts_its_store_error_by_type() -> None:
    event = Event("push", FAILED, COORD, error=StoreTimeoutError("the push took longer than 5 s"))
    assert values(metrics_of(event)) == {"xcomstash.push.failed": 1, "xcomstash.error.StoreTimeoutError": 1}


def test_a_denied_read_and_a_rejected_push_are_counted_but_not_as_errors() -> None:
    denied = Event("pull", DENIED, {"dag_id": "etl", "task_id": "extract"}, error=AccessDeniedError("not a reader"))
    rejected = Event("push", REJECTED, COORD, error=ValueTooLargeError("too large", rule="max_value_bytes"))
    assert [(m.name, m.value, m.tags) for m in metrics_of(denied)] == [("xcomstash.pull.denied", 1, TAGS)]
    assert [(m.name, m.value) for m in metrics_of(rejected)] == [("xcomstash.push.rejected", 1)]


def test_tags_are_the_xcoms_dag_and_task_only_those_known() -> None:
    partly = metrics_of(Event("pull", DENIED, {"dag_id": "etl", "run_id": "r", "key": "k"}))
    nothing = metrics_of(Event("pull", FAILED, None, error=StoreReadError("down", uri="x")))
    assert partly[0].tags == (("dag_id", "etl"),)
    assert all(m.tags == () for m in nothing)


def test_purges_and_repairs_are_counted_per_object() -> None:
    assert values(metrics_of(Event("purge", OK, COORD, size=10))) == {"xcomstash.purge.objects": 1}
    assert values(metrics_of(Event("repair", OK, COORD, size=10))) == {"xcomstash.repair.objects": 1}


def test_every_metric_name_made_is_in_the_catalogue_and_the_readme_lists_the_catalogue() -> None:
    events = [
        Event("push", OK, COORD, size=250, raw_size=1000, seconds=0.5, crypto_seconds=0.002),
        Event("push", OK, COORD, size=250, failover=("replica:1: StoreUnavailableError",)),
        Event("pull", OK, COORD, size=10, cache="hit", crypto_seconds=0.001, failover=("store: IntegrityError",)),
        Event("pull", OK, COORD, size=10, cache="miss"),
        Event("push", OK, COORD, route=INLINE), Event("pull", OK, COORD, route=INLINE),
        Event("push", DENIED, COORD), Event("push", REJECTED, COORD), Event("pull", DENIED, COORD),
        Event("push", FAILED, COORD, error=StoreTimeoutError("slow")), Event("pull", FAILED, COORD),
        Event("purge", OK, COORD), Event("repair", OK, COORD),
        Event("purge", DENIED, COORD), Event("purge", FAILED, COORD), Event("repair", DENIED, COORD),
        Event("repair", FAILED, COORD),
    ]
    catalogue = {name for name, _, _ in CATALOGUE}
    made = {re.sub(r"^xcomstash\.error\..*", "xcomstash.error.<type>", m.name) for e in events for m in metrics_of(e)}
    assert made == catalogue
    readme = README.read_text()
    for name, kind, _ in CATALOGUE:
        assert re.search(rf"\|\s*`{re.escape(name)}`\s*\|\s*{kind}\s*\|", readme), f"README lacks a row for {name}"


# ------------------------------------------------------------------- recorder


def test_inline_counts_are_summed_per_operation_dag_and_task_and_sent_before_the_next_event() -> None:
    sink = Sink()
    recorder = MetricsRecorder(sink, flush_seconds=3600)
    for _ in range(3):
        recorder.count_inline("push", COORD)
    recorder.count_inline("push", XComCoordinate("etl", "run_1", "load", -1, "return_value"))
    recorder.count_inline("pull", {"dag_id": "etl", "task_id": "extract"})
    assert sink == []  # nothing sent per inline value
    recorder(Event("push", OK, COORD, size=10, raw_size=10))
    inline = {(m.name, m.tags): m.value for m in sink if m.name.endswith(".inline")}
    assert inline == {
        ("xcomstash.push.inline", TAGS): 3,
        ("xcomstash.push.inline", (("dag_id", "etl"), ("task_id", "load"))): 1,
        ("xcomstash.pull.inline", TAGS): 1,
    }
    assert sink[-1].name != "xcomstash.push.inline"  # counts first, then the event's own metrics
    sink.clear()
    recorder.flush()
    assert sink == []  # sent once


def test_inline_counts_are_sent_once_the_flush_interval_has_passed() -> None:
    sink = Sink()
    recorder = MetricsRecorder(sink, flush_seconds=0)
    recorder.count_inline("push", COORD)
    assert [(m.name, m.value) for m in sink] == [("xcomstash.push.inline", 1)]


def test_inline_counts_from_many_threads_with_flushes_in_between_add_up_exactly() -> None:
    sink = Sink()
    recorder = MetricsRecorder(sink, flush_seconds=0)  # every count may flush: the worst case
    threads, each = 4, 5_000

    def count() -> None:
        for _ in range(each):
            recorder.count_inline("push", COORD)

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    recorder.flush()
    assert sum(m.value for m in sink) == threads * each
    assert all(m.value > 0 and m.name == "xcomstash.push.inline" for m in sink)


def test_observer_counts_inline_values_without_events_only_when_no_subscriber_wants_inline_events() -> None:
    recorder = MetricsRecorder(Sink())

    class WantsInline(list):
        wants_inline = True

        def flush(self) -> None:
            pass

    assert Observer([recorder]).counts_inline
    assert not Observer([recorder, WantsInline()]).counts_inline  # events are built: counted from them
    assert not Observer([WantsInline()]).counts_inline


# ------------------------------------------------------------------- through the engine


def engine_with_metrics(root: Path, **kwargs: Any) -> tuple[Engine, Sink]:
    sink = Sink()
    recorder = MetricsRecorder(sink, flush_seconds=3600)
    config = kwargs.pop("config", StashConfig(store_url=f"file://{root}", read_ahead=False, compression="zstd"))
    return Engine(config, subscribers=[recorder], **kwargs), sink


def test_engine_inline_and_stored_values_give_their_counts_and_sizes(tmp_path: Path) -> None:
    engine, sink = engine_with_metrics(tmp_path / "s")
    array = np.arange(100_000, dtype=np.int64)
    small = engine.serialize({"n": 1}, COORD)
    row = engine.serialize(array, COORD)
    assert engine.deserialize(small, COORD) == {"n": 1}
    assert np.array_equal(engine.deserialize(row, COORD), array)
    engine.flush()
    got = values(sink)
    assert got["xcomstash.push.inline"] == 1 and got["xcomstash.pull.inline"] == 1
    assert got["xcomstash.push.offloaded"] == 1 and got["xcomstash.pull.offloaded"] == 1
    assert 800_000 <= got["xcomstash.push.bytes"] < 801_000  # the array's bytes, plus the codec's header
    assert got["xcomstash.push.stored_bytes"] == row["size"] == got["xcomstash.pull.bytes"]
    assert got["xcomstash.push.compression_ratio"] == pytest.approx(got["xcomstash.push.bytes"] / row["size"], rel=1e-3)
    assert got["xcomstash.push.compression_ratio"] > 2  # an arange compresses
    assert "xcomstash.push.encryption" not in got and not [n for n in got if "cache" in n]


def test_engine_with_a_trace_file_counts_inline_values_from_their_events_exactly_once(tmp_path: Path) -> None:
    engine, sink = engine_with_metrics(tmp_path / "s", trace_file=str(tmp_path / "trace.jsonl"))
    assert engine.observer.wants_inline and not engine.observer.counts_inline
    engine.deserialize(engine.serialize({"n": 1}, COORD), COORD)
    engine.flush()
    assert values(sink) == {"xcomstash.push.inline": 1, "xcomstash.pull.inline": 1}


def test_engine_read_cache_misses_then_hits_and_a_damaged_entry_is_an_integrity_failure_and_a_miss(
    tmp_path: Path,
) -> None:
    cache = CachingStore(LocalStore(tmp_path / "s"), tmp_path / "cache", 10**8)
    engine, sink = engine_with_metrics(tmp_path / "s", store=cache)
    value = np.random.default_rng(1).standard_normal(50_000)
    row = engine.serialize(value, COORD)
    for _ in range(2):
        engine.deserialize(row, COORD)
    assert [m.name for m in sink if m.name.startswith("xcomstash.cache.")] == ["xcomstash.cache.miss", "xcomstash.cache.hit"]
    entry = cache.path_for(engine.store.key_for(row["uri"]))
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01
    entry.write_bytes(bytes(data))
    sink.clear()
    assert np.array_equal(engine.deserialize(row, COORD), value)
    got = values(sink)
    assert got["xcomstash.cache.miss"] == 1 and "xcomstash.cache.hit" not in got
    assert got["xcomstash.pull.failover"] == 1 and got["xcomstash.integrity_failure"] == 1
    assert got["xcomstash.error.IntegrityError"] == 1 and got["xcomstash.pull.offloaded"] == 1


def test_engine_damaged_object_is_one_integrity_failure_one_failed_pull(tmp_path: Path) -> None:
    engine, sink = engine_with_metrics(tmp_path / "s")
    row = engine.serialize(b"x" * 200_000, COORD)
    path = tmp_path / "s" / engine.store.key_for(row["uri"])
    path.write_bytes(path.read_bytes()[:-1])
    sink.clear()
    with pytest.raises(IntegrityError):
        engine.deserialize(row, COORD)
    assert values(sink) == {
        "xcomstash.pull.failed": 1, "xcomstash.integrity_failure": 1, "xcomstash.error.IntegrityError": 1,
    }


def test_engine_encrypted_values_report_encryption_and_decryption_time(tmp_path: Path) -> None:
    guard = Guard(SecurityConfig(keyring=KeyRing.single(Keyset.generate()), encrypt=True, sign_references=True))
    engine, sink = engine_with_metrics(tmp_path / "s", guard=guard)
    value = np.random.default_rng(2).standard_normal(300_000)  # 2.4 MB: three frames
    row = engine.serialize(value, COORD)
    assert np.array_equal(engine.deserialize(row, COORD), value)
    got = named(sink)
    (enc,), (dec,) = got["xcomstash.push.encryption"], got["xcomstash.pull.decryption"]
    assert enc.kind == dec.kind == TIMER
    # milliseconds, summed over the frame threads: more than nothing, far less than ten seconds
    assert 0 < enc.value < 10_000 and 0 < dec.value < 10_000


def test_engine_partial_table_read_counts_only_the_bytes_it_fetched(tmp_path: Path) -> None:
    engine, sink = engine_with_metrics(
        tmp_path / "s", config=StashConfig(store_url=f"file://{tmp_path / 's'}", read_ahead=False, compression="none")
    )
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({c: rng.standard_normal(400_000) for c in "abcd"})
    row = engine.serialize(frame, COORD)
    sink.clear()
    part, stats = engine.read_table(row, columns=["a"])
    assert list(part.columns) == ["a"] and stats is not None
    (pulled,) = named(sink)["xcomstash.pull.bytes"]
    assert pulled.value == stats.bytes_fetched < row["size"] / 2


def test_engine_replicated_store_push_that_lost_a_location_and_pull_that_failed_over(tmp_path: Path) -> None:
    from xcomstash.stores.faulty import FaultyStore
    from xcomstash.stores.replicated import ReplicatedStore

    flaky_write = FaultyStore(LocalStore(tmp_path / "b"), fail_writes=True)
    store = ReplicatedStore([LocalStore(tmp_path / "a"), flaky_write], write_quorum=1)
    engine, sink = engine_with_metrics(tmp_path / "a", store=store)
    row = engine.serialize(b"y" * 200_000, COORD)
    got = values(sink)
    assert got["xcomstash.push.offloaded"] == 1 and got["xcomstash.push.failover"] == 1
    assert got["xcomstash.error.StoreUnavailableError"] == 1 and "xcomstash.push.failed" not in got

    down = FaultyStore(LocalStore(tmp_path / "a"), fail_reads=True)
    both = ReplicatedStore([down, LocalStore(tmp_path / "c")])
    engine, sink = engine_with_metrics(tmp_path / "a", store=both)
    row = engine.serialize(b"z" * 200_000, COORD)
    sink.clear()
    assert engine.deserialize(row, COORD) == b"z" * 200_000
    got = values(sink)
    assert got["xcomstash.pull.failover"] == 1 and got["xcomstash.error.StoreReadError"] == 1
    assert "xcomstash.push.failover" not in got and "xcomstash.integrity_failure" not in got
