"""Frames, the body of a stored object: FrameWriter cuts a payload into independently
compressed, hashed frames, and read_frames reassembles it, verifying every frame first;
open_frame (partial reads, verify) and open_frame_into (read_frames) open one frame."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import blake3
import pytest

from xcomstash.format.frames import (
    ENTRY,
    FRAME_SIZE,
    METHOD_RAW,
    METHOD_ZSTD,
    SEAL_OVERHEAD,
    Frame,
    FrameError,
    FrameWriter,
    frame_offsets,
    open_frame,
    open_frame_into,
    pack_table,
    read_frames,
    unpack_table,
    verify_stored_frames,
)
from xcomstash.security.crypto.stream import Envelope, FrameCipher, new_data_key

SMALL = 4096  # a small frame size keeps the multi-frame cases fast


@pytest.fixture(scope="module")
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as p:
        yield p


def write(
    payload: bytes,
    pool: ThreadPoolExecutor,
    *,
    compression: str = "zstd",
    frame_size: int = FRAME_SIZE,
    pieces: int = 1,
) -> tuple[list[Frame], bytes, FrameWriter]:
    """Feed ``payload`` to a FrameWriter in ``pieces`` writes; returns table, body and writer."""
    sink = io.BytesIO()
    writer = FrameWriter(sink, compression, 3, pool, frame_size=frame_size, inflight=2)
    step = max(1, -(-len(payload) // pieces))
    for start in range(0, len(payload), step):
        assert writer.write(payload[start : start + step]) == len(payload[start : start + step])
    frames = writer.finish()
    return frames, sink.getvalue(), writer


def reader_over(blob: bytes) -> tuple[Callable[[int, int], bytes], Callable[[int, memoryview], int]]:
    """``read_at`` and ``readinto_at`` over ``blob``, short at its end like a store reader."""

    def read_at(at: int, length: int) -> bytes:
        return blob[at : at + length]

    def readinto_at(at: int, target: memoryview) -> int:
        chunk = blob[at : at + target.nbytes]
        target[: len(chunk)] = chunk
        return len(chunk)

    return read_at, readinto_at


def read(frames: list[Frame], body: bytes, pool: ThreadPoolExecutor, offset: int = 0) -> bytearray:
    """read_frames over ``body`` placed at ``offset`` of a larger object."""
    blob = b"P" * offset + body + b"T" * 17  # something before and after the body
    return read_frames(frames, offset, *reader_over(blob), pool)


def repetitive(n: int) -> bytes:
    return (b"the same line of text, again and again\n" * (n // 39 + 1))[:n]


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize(
    "size",
    [0, 1, FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 1],
    ids=["empty", "one byte", "frame-1", "exactly one frame", "frame+1"],
)
@pytest.mark.parametrize("kind", ["random", "repetitive"])
def test_round_trip_is_byte_identical_at_frame_size_boundaries(
    size: int, kind: str, pool: ThreadPoolExecutor
) -> None:
    payload = os.urandom(size) if kind == "random" else repetitive(size)
    frames, body, writer = write(payload, pool)
    assert len(frames) == -(-size // FRAME_SIZE)  # ceil: no empty frame, no frame too many
    assert all(0 < f.raw_len <= FRAME_SIZE for f in frames)
    assert writer.raw_size == size == sum(f.raw_len for f in frames)
    assert writer.body_size == len(body) == sum(f.stored_len for f in frames)
    assert writer.tell() == size
    back = read(frames, body, pool, offset=13)
    assert not memoryview(back).readonly and memoryview(back).c_contiguous  # codecs may keep it as the value's memory
    assert bytes(back) == payload


@pytest.mark.parametrize("frame_size", [1, 7, SMALL])
@pytest.mark.parametrize("pieces", [1, 3, 50])
def test_round_trip_over_many_small_frames_and_uneven_writes(
    frame_size: int, pieces: int, pool: ThreadPoolExecutor
) -> None:
    size = min(SMALL, 60 * frame_size)  # about 60 or more frames, each size kept fast
    payload = os.urandom(size) + repetitive(3 * size + 5) + os.urandom(size // 3 + 1)
    frames, body, _ = write(payload, pool, frame_size=frame_size, pieces=pieces)
    assert len(frames) == -(-len(payload) // frame_size)
    assert [f.raw_len for f in frames[:-1]] == [frame_size] * (len(frames) - 1)
    assert bytes(read(frames, body, pool)) == payload


def test_frames_are_written_in_order_with_more_frames_than_inflight(pool: ThreadPoolExecutor) -> None:
    chunks = [bytes([i]) * SMALL for i in range(40)]  # each frame distinguishable
    frames, body, _ = write(b"".join(chunks), pool, compression="none", frame_size=SMALL, pieces=40)
    assert [f.digest for f in frames] == [blake3.blake3(c).digest() for c in chunks]
    assert body == b"".join(chunks)


def test_writer_accepts_buffer_objects(pool: ThreadPoolExecutor) -> None:
    sink = io.BytesIO()
    writer = FrameWriter(sink, "zstd", 1, pool, frame_size=SMALL)
    import array

    parts = [b"abc", bytearray(b"defg"), memoryview(b"hij"), array.array("i", [1, 2, 3])]
    for part in parts:
        writer.write(part)
    frames = writer.finish()
    expected = b"abcdefghij" + array.array("i", [1, 2, 3]).tobytes()
    assert writer.raw_size == len(expected)
    assert bytes(read(frames, sink.getvalue(), pool)) == expected


# ------------------------------------------------------------------ compression choice


def test_incompressible_frames_are_stored_raw(pool: ThreadPoolExecutor) -> None:
    payload = os.urandom(5 * SMALL)
    frames, body, _ = write(payload, pool, frame_size=SMALL)
    assert [f.method for f in frames] == [METHOD_RAW] * 5
    assert all(f.stored_len == f.raw_len for f in frames)
    assert body == payload  # raw frames are the payload's own bytes


def test_repetitive_frames_are_zstd_compressed(pool: ThreadPoolExecutor) -> None:
    payload = repetitive(5 * SMALL)
    frames, body, _ = write(payload, pool, frame_size=SMALL)
    assert [f.method for f in frames] == [METHOD_ZSTD] * 5
    assert all(f.stored_len < f.raw_len for f in frames)
    assert len(body) < len(payload) // 4
    assert bytes(read(frames, body, pool)) == payload


def test_each_frame_chooses_its_own_method(pool: ThreadPoolExecutor) -> None:
    payload = os.urandom(SMALL) + repetitive(SMALL) + os.urandom(SMALL) + repetitive(SMALL)
    frames, body, _ = write(payload, pool, frame_size=SMALL)
    assert [f.method for f in frames] == [METHOD_RAW, METHOD_ZSTD, METHOD_RAW, METHOD_ZSTD]
    assert bytes(read(frames, body, pool)) == payload


def test_compression_none_stores_everything_raw(pool: ThreadPoolExecutor) -> None:
    payload = repetitive(5 * SMALL) + os.urandom(SMALL)
    frames, body, _ = write(payload, pool, compression="none", frame_size=SMALL)
    assert [f.method for f in frames] == [METHOD_RAW] * 6
    assert body == payload
    assert bytes(read(frames, body, pool)) == payload


@pytest.mark.parametrize("hash_name", ["blake3", "sha256"])
def test_frame_digest_is_the_named_hash_of_the_stored_bytes(hash_name: str, pool: ThreadPoolExecutor) -> None:
    payload = os.urandom(SMALL) + repetitive(SMALL)
    sink = io.BytesIO()
    writer = FrameWriter(sink, "zstd", 1, pool, frame_size=SMALL, hash=hash_name)
    writer.write(payload)
    frames = writer.finish()
    body = sink.getvalue()
    expected = blake3.blake3 if hash_name == "blake3" else hashlib.sha256
    at = 0
    for frame in frames:
        assert frame.hash == hash_name
        assert frame.digest == expected(body[at : at + frame.stored_len]).digest()
        at += frame.stored_len
    assert bytes(read(frames, body, pool)) == payload
    # Checked with the hash the table was read with: the other one finds every frame wrong.
    other = "sha256" if hash_name == "blake3" else "blake3"
    with pytest.raises(FrameError):
        read([dataclasses.replace(f, hash=other) for f in frames], body, pool)


# ------------------------------------------------------------------ verification


@pytest.mark.parametrize("kind", ["random", "repetitive"])
def test_any_altered_stored_byte_raises_frame_error(kind: str, pool: ThreadPoolExecutor) -> None:
    payload = os.urandom(3 * 512) if kind == "random" else repetitive(3 * 2048)
    frames, body, _ = write(payload, pool, frame_size=len(payload) // 3)
    assert len(frames) == 3
    for offset in range(len(body)):
        damaged = bytearray(body)
        damaged[offset] ^= 0x01
        with pytest.raises(FrameError):
            read(frames, bytes(damaged), pool)
    assert bytes(read(frames, body, pool)) == payload


@pytest.mark.parametrize("kind", ["random", "repetitive"])
def test_body_shorter_than_its_table_raises_frame_error(kind: str, pool: ThreadPoolExecutor) -> None:
    payload = os.urandom(3 * SMALL) if kind == "random" else repetitive(3 * SMALL)
    frames, body, _ = write(payload, pool, frame_size=SMALL)
    for cut in (1, frames[-1].stored_len, len(body)):
        with pytest.raises(FrameError):
            read_frames(frames, 0, *reader_over(body[:-cut]), pool)


def test_frames_swapped_in_the_body_raise_frame_error(pool: ThreadPoolExecutor) -> None:
    a, b = os.urandom(SMALL), os.urandom(SMALL)
    frames, body, _ = write(a + b, pool, frame_size=SMALL)
    with pytest.raises(FrameError):
        read(frames, b + a, pool)


def test_frame_table_entry_with_a_wrong_digest_raises_frame_error(pool: ThreadPoolExecutor) -> None:
    frames, body, _ = write(os.urandom(2 * SMALL), pool, frame_size=SMALL)
    wrong = [frames[0], Frame(frames[1].method, frames[1].raw_len, frames[1].stored_len, b"\0" * 32)]
    with pytest.raises(FrameError):
        read(wrong, body, pool)


def _zstd_frame_with_matching_digest(stored: bytes, raw_len: int) -> Frame:
    return Frame(METHOD_ZSTD, raw_len, len(stored), hashlib.sha256(stored).digest(), "sha256")


@pytest.mark.parametrize("case", ["not zstd", "larger than raw_len", "smaller than raw_len"])
def test_zstd_frame_that_matches_its_digest_but_does_not_decode_raises_frame_error(
    case: str, pool: ThreadPoolExecutor
) -> None:
    """A frame whose digest matches (a buggy or foreign producer) but whose zstd data does not
    decompress to exactly raw_len bytes is a FrameError, never a zstandard exception."""
    import zstandard

    if case == "not zstd":
        stored, raw_len = b"these bytes are not a zstd frame at all", 100
    elif case == "larger than raw_len":  # no content size in the header: output is unbounded
        stored = zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 1000)
        raw_len = 100
    else:
        stored = zstandard.ZstdCompressor().compress(b"a" * 50)
        raw_len = 100
    frame = _zstd_frame_with_matching_digest(stored, raw_len)
    with pytest.raises(FrameError):
        read([frame], stored, pool)
    # also as one frame among several (decoded on the pool)
    good = os.urandom(64)
    frames = [Frame(METHOD_RAW, 64, 64, hashlib.sha256(good).digest(), "sha256"), frame]
    with pytest.raises(FrameError):
        read(frames, good + stored, pool)


# ------------------------------------------------------------------ one frame

MIXED = os.urandom(SMALL) + repetitive(SMALL) + os.urandom(SMALL // 2)  # raw, zstd, short raw


def cipher() -> FrameCipher:
    return FrameCipher(new_data_key(), Envelope.new(), b"object aad")


def sealed_write(payload: bytes, pool: ThreadPoolExecutor, sealer: FrameCipher) -> tuple[list[Frame], bytes]:
    sink = io.BytesIO()
    writer = FrameWriter(sink, "zstd", 3, pool, frame_size=SMALL, cipher=sealer)
    writer.write(payload)
    return writer.finish(), sink.getvalue()


@pytest.mark.parametrize("sealed", [False, True], ids=["plaintext", "sealed"])
def test_open_frame_gives_each_frames_raw_bytes_whatever_its_method(sealed: bool, pool: ThreadPoolExecutor) -> None:
    key = cipher() if sealed else None
    if key is None:
        frames, body, _ = write(MIXED, pool, frame_size=SMALL)
    else:
        frames, body = sealed_write(MIXED, pool, key)
    assert [f.method for f in frames] == [METHOD_RAW, METHOD_ZSTD, METHOD_RAW]
    read_at, readinto_at = reader_over(b"P" * 5 + body)
    last = len(frames) - 1
    for index, (frame, (offset, start)) in enumerate(zip(frames, frame_offsets(frames, 5))):
        expected = MIXED[start : start + frame.raw_len]
        assert open_frame(index, frame, offset, read_at, cipher=key, last=index == last) == expected
        target = memoryview(bytearray(frame.raw_len))
        open_frame_into(index, frame, offset, read_at, readinto_at, target, cipher=key, last=index == last)
        assert target == expected


def test_open_frame_rejects_a_frame_that_does_not_match_its_digest(pool: ThreadPoolExecutor) -> None:
    frames, body, _ = write(MIXED, pool, frame_size=SMALL)
    for index, (frame, (offset, _)) in enumerate(zip(frames, frame_offsets(frames, 0))):
        damaged = bytearray(body)
        damaged[offset + frame.stored_len // 2] ^= 1
        read_at, readinto_at = reader_over(bytes(damaged))
        with pytest.raises(FrameError, match=f"frame {index} does not match its digest"):
            open_frame(index, frame, offset, read_at)
        with pytest.raises(FrameError, match=f"frame {index} does not match its digest"):
            open_frame_into(index, frame, offset, read_at, readinto_at, memoryview(bytearray(frame.raw_len)))


def test_open_frame_of_a_sealed_frame_needs_its_position(pool: ThreadPoolExecutor) -> None:
    """The nonce carries the index and the last-frame flag: a frame opened as another one fails."""
    from xcomstash.errors import DecryptionError

    key = cipher()
    frames, body = sealed_write(MIXED, pool, key)
    read_at, _ = reader_over(body)
    offset = frame_offsets(frames, 0)[2][0]
    assert open_frame(2, frames[2], offset, read_at, cipher=key, last=True) == MIXED[2 * SMALL :]
    with pytest.raises(DecryptionError):
        open_frame(2, frames[2], offset, read_at, cipher=key, last=False)


def test_verify_stored_frames_decodes_only_when_asked(pool: ThreadPoolExecutor) -> None:
    """A frame whose digest matches but which does not decompress passes the keyless check
    (all verify can do for an encrypted object) and fails the decoding one."""
    stored = b"these bytes are not a zstd frame at all"
    frames = [_zstd_frame_with_matching_digest(stored, 100)]
    read_at, _ = reader_over(stored)
    verify_stored_frames(frames, 0, read_at, pool)
    with pytest.raises(FrameError, match="does not decompress"):
        verify_stored_frames(frames, 0, read_at, pool, decode=True)


def test_frame_offsets_place_every_frame_in_object_and_payload() -> None:
    frames = [Frame(METHOD_ZSTD, 10, 4, b""), Frame(METHOD_RAW, 3, 3, b""), Frame(METHOD_ZSTD, 7, 2, b"")]
    assert frame_offsets(frames, 100) == [(100, 0), (104, 10), (107, 13)]
    assert frame_offsets([], 100) == []


# ------------------------------------------------------------------ frame table


def test_table_round_trips_through_pack_and_unpack(pool: ThreadPoolExecutor) -> None:
    frames, _, _ = write(os.urandom(SMALL) + repetitive(2 * SMALL) + b"x", pool, frame_size=SMALL)
    blob = pack_table(frames)
    assert len(blob) == len(frames) * ENTRY.size
    assert unpack_table(blob) == frames
    assert unpack_table(b"") == []


def _entry(method: int, raw_len: int, stored_len: int) -> bytes:
    return ENTRY.pack(method, raw_len, stored_len, b"\x11" * 32)


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"\0", id="one byte"),
        pytest.param(_entry(0, 1, 1)[:-1], id="one byte short of an entry"),
        pytest.param(_entry(0, 1, 1) + b"\0", id="one byte over an entry"),
        pytest.param(_entry(2, 1, 1), id="unknown method 2"),
        pytest.param(_entry(255, 1, 1), id="unknown method 255"),
        pytest.param(_entry(0, 5, 4), id="raw frame with a shorter stored length"),
        pytest.param(_entry(0, 4, 5), id="raw frame with a longer stored length"),
        pytest.param(_entry(0, FRAME_SIZE + 1, FRAME_SIZE + 1), id="raw frame too large"),
        pytest.param(_entry(1, FRAME_SIZE + 1, 10), id="zstd frame too large"),
        pytest.param(_entry(1, 0xFFFFFFFF, 10), id="zstd frame of 4 GiB"),
        pytest.param(_entry(0, 1, 1) + _entry(3, 1, 1), id="second entry invalid"),
    ],
)
def test_unpack_table_rejects_malformed_tables(blob: bytes) -> None:
    with pytest.raises(FrameError):
        unpack_table(blob)


def test_unpack_table_accepts_the_largest_valid_entries() -> None:
    blob = _entry(0, FRAME_SIZE, FRAME_SIZE) + _entry(1, FRAME_SIZE, 0xFFFFFFFF) + _entry(0, 0, 0)
    frames = unpack_table(blob)
    assert [(f.method, f.raw_len, f.stored_len) for f in frames] == [
        (0, FRAME_SIZE, FRAME_SIZE),
        (1, FRAME_SIZE, 0xFFFFFFFF),
        (0, 0, 0),
    ]


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("sealed", [False, True], ids=["plaintext", "sealed"])
@pytest.mark.parametrize("seed", range(6))
def test_writes_of_any_sizes_cut_the_same_frames_as_one_write(
    compression: str, sealed: bool, seed: int, pool: ThreadPoolExecutor
) -> None:
    """Writes that end mid-frame, exactly on a frame boundary, or span many frames give the
    frames one write of the whole payload gives; a sealed object's last frame is the last one."""
    import random

    rng = random.Random(seed)
    payload = os.urandom(rng.randrange(1, 9 * SMALL)) + repetitive(rng.randrange(0, 3 * SMALL))
    if seed % 2:  # ends exactly on a frame boundary, after a write that ended mid-frame
        payload = payload[: max(2, len(payload) // SMALL) * SMALL] if len(payload) > SMALL else os.urandom(2 * SMALL)
    cuts = sorted(rng.sample(range(1, len(payload)), min(len(payload) - 1, rng.randrange(1, 12))))
    cuts += [c for c in (SMALL, 2 * SMALL, 2 * SMALL + 1) if c < len(payload)]  # on and next to boundaries
    key = cipher() if sealed else None
    sink = io.BytesIO()
    writer = FrameWriter(sink, compression, 3, pool, frame_size=SMALL, cipher=key)
    for start, stop in zip([0, *sorted(set(cuts))], [*sorted(set(cuts)), len(payload)]):
        assert writer.write(payload[start:stop]) == stop - start
    frames = writer.finish()
    assert [f.raw_len for f in frames] == [SMALL] * (len(payload) // SMALL) + ([len(payload) % SMALL] if len(payload) % SMALL else [])
    body = sink.getvalue()
    read_at, readinto_at = reader_over(body)
    got = b"".join(
        open_frame(i, f, offset, read_at, cipher=key, last=i == len(frames) - 1)
        for i, (f, (offset, _)) in enumerate(zip(frames, frame_offsets(frames, 0)))
    )
    assert got == payload


def test_a_raw_body_is_written_from_the_callers_memory_and_survives_its_reuse(pool: ThreadPoolExecutor) -> None:
    """Uncompressed, unencrypted frames go to the sink straight from the caller's buffer; the
    writer waits for their hashes before write returns, so reusing the buffer then changes
    nothing that was stored or hashed."""
    writes: list[bytes] = []

    class Sink:
        def write(self, data: Any) -> int:
            writes.append(bytes(data))
            return len(data)

    buffer = bytearray(os.urandom(3 * SMALL + 100))
    first = bytes(buffer)
    writer = FrameWriter(Sink(), "none", 1, pool, frame_size=SMALL)
    writer.write(memoryview(buffer))
    buffer[:] = b"\0" * len(buffer)
    writer.write(b"tail")
    frames = writer.finish()
    body = b"".join(writes)
    assert body == first + b"tail"
    assert [len(w) for w in writes[:3]] == [SMALL] * 3  # the whole frames, one write each
    assert [f.raw_len for f in frames] == [SMALL, SMALL, SMALL, 104]
    assert bytes(read(frames, body, pool)) == first + b"tail"


def test_a_sealed_raw_body_is_sealed_from_the_callers_memory_and_survives_its_reuse(pool: ThreadPoolExecutor) -> None:
    """Whole frames of an uncompressed encrypted body are sealed from the caller's buffer into
    the writer's reused buffers; every seal is done when write returns, so reusing the caller's
    buffer then changes nothing stored, and each frame opens under its own index."""
    writes: list[bytes] = []

    class Sink:
        def write(self, data: Any) -> int:
            writes.append(bytes(data))  # the writer reuses what it hands over
            return len(data)

    key = cipher()
    buffer = bytearray(os.urandom(9 * SMALL + 100))  # more frames than the writer has buffers
    first = bytes(buffer)
    writer = FrameWriter(Sink(), "none", 1, pool, frame_size=SMALL, cipher=key, inflight=2)
    writer.write(memoryview(buffer))
    buffer[:] = b"\0" * len(buffer)
    writer.write(b"tail")
    frames = writer.finish()
    assert [len(w) for w in writes[:9]] == [SMALL + SEAL_OVERHEAD] * 9  # one write per sealed frame
    body = b"".join(writes)
    read_at, readinto_at = reader_over(body)
    last = len(frames) - 1
    got = b"".join(
        open_frame(i, f, offset, read_at, cipher=key, last=i == last)
        for i, (f, (offset, _)) in enumerate(zip(frames, frame_offsets(frames, 0)))
    )
    assert got == first + b"tail"
