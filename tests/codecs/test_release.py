"""Releasing the pages of a consumed buffer: the resident memory drops, bytes outside the range
are untouched."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

from xcomstash.codecs import release

linux = pytest.mark.skipif(sys.platform != "linux", reason="madvise(MADV_DONTNEED) is Linux's")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * mmap.PAGESIZE


@linux
def test_released_pages_leave_the_resident_set() -> None:
    buffer = np.ones(64 << 20, dtype=np.uint8)  # touched: every page resident
    before = _resident_bytes()
    given = release.release(buffer.ctypes.data, buffer.nbytes)
    assert given >= (64 << 20) - 2 * mmap.PAGESIZE
    assert before - _resident_bytes() >= 60 << 20


@linux
def test_bytes_of_partly_covered_pages_at_either_end_are_kept() -> None:
    buffer = np.full(8 << 20, 7, dtype=np.uint8)
    start, stop = 100, (8 << 20) - 100  # neither end on a page boundary
    release.release(buffer.ctypes.data + start, stop - start)
    page = mmap.PAGESIZE
    first_whole = -(-(buffer.ctypes.data + start) // page) * page - buffer.ctypes.data
    assert (buffer[:first_whole] == 7).all()
    last_whole = (buffer.ctypes.data + stop) // page * page - buffer.ctypes.data
    assert (buffer[last_whole:] == 7).all()
    assert (buffer[first_whole:last_whole] == 0).all()  # released pages read as zeros


def test_a_range_below_the_minimum_is_not_released() -> None:
    buffer = np.full(release.MIN_RELEASE_BYTES // 2, 7, dtype=np.uint8)
    assert release.release(buffer.ctypes.data, buffer.nbytes) == 0
    assert (buffer == 7).all()
