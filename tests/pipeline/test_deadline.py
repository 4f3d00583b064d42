"""Deadlines: a push or pull against a store that accepts requests and never answers fails
with StoreTimeoutError within the configured bound, its failure audited without waiting on
the same hung store; a store that answers in time is not affected."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.errors import StoreTimeoutError, StoreUnavailableError
from xcomstash.observe.audit import AuditLog, AuditRecorder, StoreSink
from xcomstash.stores import FaultyStore, LocalStore, WrapperStore

COORD = XComCoordinate("dag", "run", "task", -1, "return_value")
VALUE = np.arange(100_000, dtype=np.float64)


class HungWrites(WrapperStore):
    """Every write blocks until ``release`` is set (a service that takes the connection and
    never answers); reads pass through."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.release = threading.Event()

    @contextmanager
    def new_object(self, staged_key):
        self.release.wait()
        with self.inner.new_object(staged_key) as pending:
            yield pending

    def writer(self, key):
        return super(WrapperStore, self).writer(key)  # Store.writer: through new_object


def engine(store, **config) -> Engine:
    return Engine(StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False, **config), store)


def test_a_push_to_a_hung_store_fails_within_its_deadline_and_is_audited_promptly(tmp_path) -> None:
    hung = HungWrites(LocalStore(tmp_path / "s"))
    sink = StoreSink(hung, flush_wait=0.5)
    kept = []

    class Kept:
        def write(self, event):
            kept.append(event)

        def flush(self):
            pass

    e = Engine(
        StashConfig(store_url=hung.root_uri, threshold=0, read_ahead=False, push_timeout=0.5),
        hung, subscribers=[AuditRecorder(AuditLog([sink, Kept()]))],
    )
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match=r"within 0.5 s") as info:
        e.serialize(VALUE, COORD)
    elapsed = time.monotonic() - started
    assert isinstance(info.value, StoreUnavailableError)
    assert str(COORD) in str(info.value)
    # The deadline, plus at most the audit sink's bounded wait on the same hung store.
    assert elapsed < 0.5 + 0.5 + 1.5, elapsed
    assert [(k.op, k.outcome) for k in kept] == [("push", "failed")]
    assert "StoreTimeoutError" in kept[0].error
    hung.release.set()


def test_a_pull_from_a_hung_store_fails_within_its_deadline(tmp_path) -> None:
    inner = LocalStore(tmp_path / "s")
    row = engine(inner).serialize(VALUE, COORD)
    slow = engine(FaultyStore(inner, delay=30), pull_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(StoreTimeoutError, match="pull"):
        slow.deserialize(row, COORD)
    assert time.monotonic() - started < 2.5


def test_a_store_that_answers_in_time_is_not_affected(tmp_path) -> None:
    store = FaultyStore(LocalStore(tmp_path / "s"), delay=0.01)
    e = engine(store, push_timeout=30, pull_timeout=30)
    assert np.array_equal(e.deserialize(e.serialize(VALUE, COORD), COORD), VALUE)


def test_timeouts_must_be_positive_seconds_or_none() -> None:
    from xcomstash.errors import ConfigError

    assert StashConfig(push_timeout=None, pull_timeout=None).push_timeout is None
    for bad in (0, -1, "10", True):
        with pytest.raises(ConfigError, match="push_timeout"):
            StashConfig(push_timeout=bad)

