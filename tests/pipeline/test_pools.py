"""CallerFirst: the frames of a small object are framed or read on the calling thread (no
hand-off to the pool and back); a larger object's frames all go to the pool."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from xcomstash.pipeline.pools import CallerFirst, LazyPool


def where(i: int) -> tuple[int, str]:
    return i, threading.current_thread().name


@pytest.fixture
def pool():
    lazy = LazyPool(2, "test-frames")
    yield lazy
    lazy.shutdown()


def test_up_to_two_frames_run_on_the_calling_thread_without_starting_the_pool(pool) -> None:
    ex = CallerFirst(pool)
    calls = [ex.submit(where, i) for i in range(2)]
    me = threading.current_thread().name
    assert [c.result() for c in calls] == [(0, me), (1, me)]
    assert not ex.used_pool
    assert pool._pool is None  # the pool was never even created
    assert list(CallerFirst(pool).map(where, [7, 8])) == [(7, me), (8, me)]


def test_a_third_frame_sends_every_waiting_frame_to_the_pool_in_order(pool) -> None:
    ex = CallerFirst(pool)
    calls = [ex.submit(where, i) for i in range(6)]
    results = [c.result() for c in calls]
    assert ex.used_pool
    assert [i for i, _ in results] == list(range(6))
    assert all(name.startswith("test-frames") for _, name in results)
    assert [i for i, _ in CallerFirst(pool).map(where, range(5))] == list(range(5))


def test_a_frame_that_fails_raises_from_result_as_a_pool_future_would(pool) -> None:
    def boom() -> None:
        raise ValueError("bad frame")

    call = CallerFirst(pool).submit(boom)
    for _ in range(2):  # asked twice, raised twice
        with pytest.raises(ValueError, match="bad frame"):
            call.result()


def test_a_cancelled_waiting_frame_never_runs(pool) -> None:
    ran = []
    call = CallerFirst(pool).submit(ran.append, 1)
    assert call.cancel()
    with pytest.raises(CancelledError):
        call.result()
    assert ran == []
