"""Deadlines: a push or pull against a store that accepts requests and never answers fails
with StoreTimeoutError within the configured bound, its failure audited without waiting on
the same hung store; a store that answers in time is not affected."""

from __future__ import annotations

import os
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



class ThreadStarts:
    """Counts threads started while it is active (threading.settrace runs in each new thread)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __enter__(self) -> ThreadStarts:
        def trace(*_args):
            self.names.append(threading.current_thread().name)
            return None

        threading.settrace(trace)
        return self

    def __exit__(self, *exc) -> None:
        threading.settrace(None)  # type: ignore[arg-type]


def test_deadline_threads_are_reused_from_one_operation_to_the_next() -> None:
    from xcomstash.pipeline.deadline import within

    within(5, lambda: None, lambda: "warm-up")
    with ThreadStarts() as started:
        results = [within(5, lambda i=i: i * 2, lambda: "op") for i in range(50)]
    assert results == [i * 2 for i in range(50)]
    assert started.names == []


def test_a_hung_operation_does_not_hold_up_the_next_one() -> None:
    from xcomstash.pipeline.deadline import within

    release = threading.Event()
    with pytest.raises(StoreTimeoutError, match="the hung op did not finish within 0.2 s"):
        within(0.2, release.wait, lambda: "the hung op")
    started = time.monotonic()
    assert within(5, lambda: "next", lambda: "next op") == "next"  # a thread of its own
    assert time.monotonic() - started < 2
    release.set()


def test_work_under_a_deadline_sees_the_callers_context_and_raises_its_own_errors() -> None:
    import contextvars

    from xcomstash.pipeline.deadline import within

    var = contextvars.ContextVar("var", default="unset")
    var.set("caller's")
    assert within(5, var.get, lambda: "op") == "caller's"
    with pytest.raises(KeyError, match="inner"):
        within(5, lambda: {}["inner"], lambda: "op")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_starts_its_own_deadline_thread() -> None:
    from xcomstash.pipeline.deadline import within

    within(5, lambda: None, lambda: "warm-up")  # an idle thread in the parent
    pid = os.fork()
    if pid == 0:  # the child: the parent's idle thread does not exist here
        try:
            code = 0 if within(2, lambda: 42, lambda: "child op") == 42 else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_push_and_pull_of_a_small_frame_start_no_thread_once_warm(tmp_path) -> None:
    import pandas as pd

    e = engine(LocalStore(tmp_path / "s"), push_timeout=30, pull_timeout=30)
    frame = pd.DataFrame({"x": np.arange(50_000, dtype=np.float64), "s": [f"v{i % 97}" for i in range(50_000)]})
    e.deserialize(e.serialize(frame, COORD), COORD)  # warm: the deadline thread exists now
    with ThreadStarts() as started:
        for i in range(5):
            coord = XComCoordinate("dag", "run", "task", i, "return_value")
            pd.testing.assert_frame_equal(e.deserialize(e.serialize(frame, coord), coord), frame)
    # No thread per deadline, none per frame, none for pyarrow's conversion of a small frame.
    assert started.names == []
    e.close()
