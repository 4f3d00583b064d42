"""Size buckets and padded frames of encrypted objects (format version 2)."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from xcomstash.format.frames import (
    ENTRY,
    FRAME_SIZE,
    MAX_PADDED_STORED,
    MIN_PADDED_OBJECT,
    Frame,
    FrameError,
    FrameWriter,
    open_frame,
    padded_object_size,
    padme,
    unpack_table,
)
from xcomstash.security.crypto.stream import ALGORITHM_V1, Envelope, FrameCipher, new_data_key


def test_padme_buckets_cost_at_most_12_percent_and_are_stable() -> None:
    for n in list(range(1, 5000)) + [FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 1, 300_000_017]:
        p = padme(n)
        assert n <= p <= n * 1.12 + 1 and padme(p) == p


def test_object_buckets_have_a_floor_and_cost_at_most_a_frame() -> None:
    assert padded_object_size(1) == padded_object_size(MIN_PADDED_OBJECT) == MIN_PADDED_OBJECT
    for n in (MIN_PADDED_OBJECT + 1, 70_000, 5 * FRAME_SIZE + 3, 300_000_017):
        p = padded_object_size(n)
        assert n <= p <= n + FRAME_SIZE and padded_object_size(p) == p
    # 10,000 lengths, six sizes (buckets are 2 KiB wide around 100 kB).
    assert len({padded_object_size(n) for n in range(100_000, 110_000)}) <= 6


@pytest.mark.parametrize("size", [0, 1, 999, 4 * 1000, 4 * 1000 + 1])
def test_a_sealed_body_is_padded_so_the_object_is_a_bucket(size) -> None:
    envelope = Envelope.new()
    cipher = FrameCipher(new_data_key(), envelope, b"aad")
    outside = lambda count: 300 + count * ENTRY.size + 28  # noqa: E731
    sink = io.BytesIO()
    payload = os.urandom(size)
    with ThreadPoolExecutor(2) as pool:
        writer = FrameWriter(sink, "none", 1, pool, frame_size=1000, cipher=cipher, object_bytes=outside)
        writer.write(payload)
        frames = writer.finish()
        data = sink.getvalue()
        assert padded_object_size(outside(len(frames)) + len(data)) == outside(len(frames)) + len(data)
        assert all(f.stored_len == 1000 + 16 for f in frames[:-1])  # full raw frames: not padded
        out, at = b"", 0
        for i, f in enumerate(frames):
            out += open_frame(i, f, at, lambda o, n: data[o : o + n], cipher=cipher, last=i == len(frames) - 1)
            at += f.stored_len
    assert out == payload


def test_first_version_ciphers_do_not_pad() -> None:
    cipher = FrameCipher(new_data_key(), Envelope(os.urandom(7), algorithm=ALGORITHM_V1), b"aad")
    sink = io.BytesIO()
    with ThreadPoolExecutor(1) as pool:
        writer = FrameWriter(sink, "none", 1, pool, cipher=cipher)
        writer.write(b"abc")
        (frame,) = writer.finish()
    assert frame.stored_len == 3 + 16 and len(sink.getvalue()) == 19


def test_padded_frame_table_entries_are_bounded() -> None:
    def table(*frames: Frame) -> bytes:
        return b"".join(f.pack() for f in frames)

    ok = Frame(0, 10, 4096, b"\0" * 32)
    assert unpack_table(table(ok), sealed=True, padded=True) == [ok]
    for bad in (Frame(0, 10, 19, b"\0" * 32), Frame(0, 10, MAX_PADDED_STORED + 1, b"\0" * 32)):
        with pytest.raises(FrameError):
            unpack_table(table(bad), sealed=True, padded=True)
    with pytest.raises(FrameError):  # a full raw frame that is not the last is never padded
        unpack_table(table(Frame(0, 10, 4096, b"\0" * 32), ok), sealed=True, padded=True)
