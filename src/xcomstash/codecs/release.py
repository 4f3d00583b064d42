"""Handing the memory of a consumed part of a buffer back to the operating system.

A pull reads the whole verified payload into one private buffer and decodes from it. When
the decoder must copy a part of it out (a numeric column stored as several Arrow record
batches becomes one contiguous array in pandas), the payload and the copy would otherwise
both be resident until the decode ends: twice the value in memory. Releasing each part as soon
as it is copied keeps the pull near one copy of the value.

Linux only (``madvise(MADV_DONTNEED)`` on private anonymous memory, which reads back as zeros
afterwards); elsewhere nothing is released and the pull keeps both copies until it ends.
"""

from __future__ import annotations

import mmap
import sys
from functools import cache
from typing import Any

#: Releasing fewer bytes than this is not worth the system call.
MIN_RELEASE_BYTES = 1 << 20


@cache
def _madvise() -> Any:
    import ctypes  # only once a large pull has something to release

    # The symbols already loaded into this process, libc's among them (find_library would
    # start a subprocess to look for it).
    call = ctypes.CDLL(None, use_errno=True).madvise
    call.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    call.restype = ctypes.c_int
    return call


def release(address: int, nbytes: int) -> int:
    """Give back the whole memory pages inside ``[address, address + nbytes)``; return how
    many bytes that was. Only for memory that is never read again: the pages read as zeros
    afterwards (the allocation itself stays valid, and is freed as usual). The pages at either
    end that the range covers only in part are kept, so memory outside the range is never
    touched."""
    if sys.platform != "linux" or not hasattr(mmap, "MADV_DONTNEED"):
        return 0
    page = mmap.PAGESIZE
    start = -(-address // page) * page
    stop = (address + nbytes) // page * page
    if stop - start < MIN_RELEASE_BYTES:
        return 0
    if _madvise()(start, stop - start, mmap.MADV_DONTNEED) != 0:
        return 0  # a kernel that refuses it: the memory is simply kept
    return stop - start
