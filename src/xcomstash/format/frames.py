"""The body of a stored object: a sequence of independently compressed, hashed frames.

Why frames rather than one compressed stream:

- **parallel**: frames are compressed, hashed, verified and decompressed on a thread pool
  (zstd and the hashes release the GIL), so two cores do twice the work;
- **compression only where it pays**: each frame is probed (a 64 KiB sample at zstd level 1)
  and stored raw when it would not shrink, so random floats cost nothing while strings
  and repetitive columns still compress;
- **verified before use**: every frame carries its own hash (BLAKE3, or SHA-256 in older
  objects: :mod:`xcomstash.format.digests`), and the frame table is
  covered by the object's root digest (see :mod:`xcomstash.format.container`), so each frame is
  checked before it is decompressed or handed to a codec, and any byte range can later be
  read and verified on its own.

A frame table entry is ``method (u8) | raw length (u32) | stored length (u32) | hash (32)``.

**Encrypted objects** (see :mod:`xcomstash.security.crypto.stream`): each frame is compressed first
(when it pays), then sealed with AES-256-GCM under the object's data key with a STREAM nonce
(frame index and last-frame flag), so a stored frame is the ciphertext plus a 16-byte tag. The
hash in the table is over the stored (sealed) bytes, so the root digest still covers every
byte, and reads check it before decrypting. The writer holds back one frame so it knows which
frame is the last; an empty body is one empty sealed frame, so even truncation to nothing is
detected.

**Padding** (encryption version 2): stored sizes must not say what a value holds. A frame whose
length varies with the content (a compressed frame: how well it compressed; the last frame: the
exact size of the object) is padded *inside* the seal to ``content | zeros | u32 content length``,
and the cipher authenticates each frame's table entry (method, raw length) with it. Compressed
frames are padded to a Padmé bucket of their own length; the last frame is padded so that the
whole object is :func:`padded_object_size` bytes: a Padmé bucket (Nikitin et al., "Reducing
Metadata Leakage from Encrypted Files and Communication with PURBs", PETS 2019: at most 12%
larger, and only O(log log n) bits of the size remain), at least 4 KiB and at most one frame
more than the content. Full raw frames all have the same size and are not padded, so a large
uncompressed value is still decrypted straight into place. (Encrypted values are not compressed
unless their DAG opts in, see :mod:`xcomstash.pipeline.place`.)
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from xcomstash.format import digests

if TYPE_CHECKING:
    from xcomstash.security.crypto.stream import FrameCipher

#: Bytes a sealed frame adds (the AES-GCM tag).
SEAL_OVERHEAD = 16

FRAME_SIZE = 1024 * 1024
METHOD_RAW = 0
METHOD_ZSTD = 1
_METHODS = {"none": METHOD_RAW, "zstd": METHOD_ZSTD}
ENTRY = struct.Struct("<BII32s")
PROBE_BYTES = 64 * 1024
#: A frame is compressed only if a level-1 sample shrinks to at most this fraction.
PAYS_RATIO = 0.9
#: Padded frames end with the length of their content.
_PAD_LEN = struct.Struct("<I")
PAD_TRAILER = _PAD_LEN.size
#: The smallest padded (encrypted) object.
MIN_PADDED_OBJECT = 4096
#: Upper bound of a padded frame's stored length (content, padding of up to a frame, tag).
MAX_PADDED_STORED = 2 * FRAME_SIZE + 64


def padme(n: int) -> int:
    """``n`` rounded up to the next Padmé bucket: the lowest ``floor(log2 n) - floor(log2 log2 n) - 1``
    bits cleared (at most 12% larger)."""
    if n < 2:
        return n
    e = n.bit_length() - 1
    mask = (1 << (e - e.bit_length())) - 1
    return (n + mask) & ~mask


def padded_object_size(n: int) -> int:
    """The size an encrypted object of ``n`` bytes (unpadded) is stored at: a Padmé bucket, at
    least :data:`MIN_PADDED_OBJECT`, and never more than the next whole frame (so the padding
    fits in the last frame and costs at most 1 MiB on large objects)."""
    if n <= MIN_PADDED_OBJECT:
        return MIN_PADDED_OBJECT
    return min(padme(n), -(-n // FRAME_SIZE) * FRAME_SIZE)


def _pad(content: bytes, size: int) -> bytes:
    if size < len(content) + PAD_TRAILER:
        raise ValueError("padding target smaller than the content")
    return content + bytes(size - len(content) - PAD_TRAILER) + _PAD_LEN.pack(len(content))


def _unpad(index: int, padded: bytes) -> memoryview:
    if len(padded) < PAD_TRAILER:
        raise FrameError(f"frame {index} is too short for its padding")
    (n,) = _PAD_LEN.unpack_from(padded, len(padded) - PAD_TRAILER)
    if n > len(padded) - PAD_TRAILER:
        raise FrameError(f"frame {index} has a malformed padding")
    return memoryview(padded)[:n]


class FrameError(Exception):
    """A frame does not match its table entry (internal; the engine raises IntegrityError)."""


@dataclass(frozen=True)
class Frame:
    method: int
    raw_len: int
    stored_len: int
    #: The hash of the stored bytes, computed with ``hash`` (which the object's header names;
    #: not part of the packed entry).
    digest: bytes
    hash: str = field(default=digests.LEGACY, compare=False)

    def pack(self) -> bytes:
        return ENTRY.pack(self.method, self.raw_len, self.stored_len, self.digest)


def pack_table(frames: list[Frame]) -> bytes:
    return b"".join(f.pack() for f in frames)


def unpack_table(
    blob: bytes, *, sealed: bool = False, padded: bool = False, hash: str = digests.LEGACY
) -> list[Frame]:
    """``padded``: an encrypted object of version 2 (its last and compressed frames are padded).
    ``hash``: what the object's header says its frames are hashed with."""
    if len(blob) % ENTRY.size:
        raise FrameError("frame table length is not a whole number of entries")
    frames = [Frame(*ENTRY.unpack_from(blob, i), hash=hash) for i in range(0, len(blob), ENTRY.size)]
    overhead = SEAL_OVERHEAD if sealed else 0
    last = len(frames) - 1
    for i, f in enumerate(frames):
        if f.method not in (METHOD_RAW, METHOD_ZSTD) or f.raw_len > FRAME_SIZE:
            raise FrameError("frame table entry is invalid")
        if padded and (i == last or f.method != METHOD_RAW):
            if not SEAL_OVERHEAD + PAD_TRAILER <= f.stored_len <= MAX_PADDED_STORED:
                raise FrameError("padded frame with an impossible stored length")
        elif f.method == METHOD_RAW and f.stored_len != f.raw_len + overhead:
            raise FrameError("raw frame with differing stored length")
        if sealed and f.stored_len < SEAL_OVERHEAD:
            raise FrameError("sealed frame shorter than its tag")
    if sealed and not frames:
        raise FrameError("an encrypted body has at least one frame")
    return frames


def _encode_frame(
    chunk: bytes,
    method: int,
    level: int,
    cipher: FrameCipher | None = None,
    index: int = 0,
    last: bool = False,
    pad_to: Callable[[int], int] | None = None,
    hash: str = digests.DEFAULT,
) -> tuple[Frame, bytes]:
    """One frame's table entry and stored bytes. ``pad_to``: the padded length of the last
    frame's content, given its unpadded length (other padded frames take a Padmé bucket)."""
    stored, used = chunk, METHOD_RAW
    if method == METHOD_ZSTD and chunk:
        import zstandard

        probe = chunk[:PROBE_BYTES]
        sample = zstandard.ZstdCompressor(level=1).compress(probe)
        if len(sample) <= len(probe) * PAYS_RATIO:
            packed = zstandard.ZstdCompressor(level=level).compress(chunk)
            if len(packed) < len(chunk):
                stored, used = packed, METHOD_ZSTD
    if cipher is not None:
        if cipher.pads(last, used):
            size = pad_to(len(stored)) if last and pad_to is not None else padme(len(stored) + PAD_TRAILER)
            stored = _pad(stored, size)
        stored = cipher.seal(index, last, stored, used, len(chunk))
    return Frame(used, len(chunk), len(stored), digests.digest(hash, stored), hash), stored


class FrameWriter:
    """A write-only stream for codecs: cuts what it receives into frames, encodes them on the
    pool (at most ``inflight`` at once, so memory stays bounded) and writes them in order."""

    def __init__(
        self,
        sink: Any,
        compression: str,
        level: int,
        pool: ThreadPoolExecutor,
        *,
        frame_size: int | None = None,
        inflight: int = 4,
        cipher: FrameCipher | None = None,
        check_size: Callable[[int], None] | None = None,
        object_bytes: Callable[[int], int] | None = None,
        hash: str = digests.DEFAULT,
    ) -> None:
        self._sink = sink
        self._hash = hash
        self._method = _METHODS[compression]
        self._level = level
        self._pool = pool
        self._frame_size = frame_size or FRAME_SIZE
        self._inflight = inflight
        self._buffer = bytearray()
        self._pending: deque[Future[tuple[Frame, bytes]]] = deque()
        self.frames: list[Frame] = []
        self.raw_size = 0
        self.body_size = 0
        #: Seals frames when the object is encrypted; one frame is then held back until the
        #: next byte arrives (or finish), so the last frame is known when it is sealed.
        self._cipher = cipher
        self._index = 0
        #: Called with the running raw size (the size rule: raises to stop the write).
        self._check_size = check_size
        #: The object's bytes outside the body for a given frame count (preamble, key slot,
        #: frame table, footer): what the last frame's padding needs to bucket the whole object.
        self._object_bytes = object_bytes or (lambda count: 0)

    # The file-object protocol codecs and libraries (pyarrow, numpy, polars) expect.
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.raw_size

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        self.raw_size += n
        if self._check_size is not None:
            self._check_size(self.raw_size)
        size = self._frame_size
        hold = 1 if self._cipher is not None else 0  # keep a full frame back: it may be the last
        buffer = self._buffer
        if buffer:  # complete the frame begun by earlier writes
            take = min(size - len(buffer), view.nbytes)
            buffer += view[:take]
            view = view[take:]
            if len(buffer) < size or view.nbytes < hold:
                return n
            self._submit(bytes(buffer))
            buffer.clear()
        # Whole frames straight from the caller's bytes: one copy each (codecs write whole
        # column buffers at once), not a copy into the buffer and another out of it.
        start, end = 0, view.nbytes
        if self._method == METHOD_RAW and end >= size + hold:
            count = (end - hold) // size
            start = self._store_as_they_are(view, count) if self._cipher is None else self._seal_as_they_are(view, count)
        while end - start >= size + hold:
            self._submit(bytes(view[start : start + size]))
            start += size
        buffer += view[start:]
        return n

    def _store_as_they_are(self, view: memoryview, count: int) -> int:
        """Write ``count`` whole frames of an uncompressed, unencrypted body straight from the
        caller's memory, each hashed on the pool while the sink writes it: no copy of the value
        (what a raw frame stores is exactly its bytes). Returns the bytes consumed. The hashes
        are awaited here, because the caller may reuse its memory once ``write`` returns."""
        while self._pending:  # frames begun earlier go first
            self._drain_one()
        size = self._frame_size
        pieces = [view[i * size : (i + 1) * size] for i in range(count)]
        hashed = [self._pool.submit(digests.digest, self._hash, piece) for piece in pieces]
        try:
            for piece in pieces:
                self._sink.write(piece)
        except BaseException:
            _settle(hashed, cancel=True)
            raise
        _settle(hashed)  # every hash done (a failed one too) before the caller's memory is theirs again
        self.frames.extend(Frame(METHOD_RAW, size, size, future.result(), self._hash) for future in hashed)
        self._index += count
        self.body_size += count * size
        return count * size

    def _seal_as_they_are(self, view: memoryview, count: int) -> int:
        """Seal ``count`` whole raw frames (none of them the last) straight from the caller's
        memory into a few reused buffers, each hashed where it was sealed and written in order:
        no copy of the value and no fresh 1 MiB object per frame. Returns the bytes consumed;
        every job has finished with the caller's memory when it returns, as in
        :meth:`_store_as_they_are`."""
        while self._pending:
            self._drain_one()
        size, cipher, first = self._frame_size, self._cipher, self._index
        assert cipher is not None
        buffers = [memoryview(bytearray(size + SEAL_OVERHEAD)) for _ in range(min(self._inflight, count))]

        def seal(i: int, out: memoryview) -> bytes:
            cipher.seal_into(first + i, False, view[i * size : (i + 1) * size], out)
            return digests.digest(self._hash, out)

        running: deque[tuple[memoryview, Future[bytes]]] = deque()
        try:
            for i in range(count):
                if len(running) == len(buffers):
                    self._write_sealed(*running.popleft())
                out = buffers[i % len(buffers)]
                running.append((out, self._pool.submit(seal, i, out)))
            while running:
                self._write_sealed(*running.popleft())
        finally:  # empty unless a seal or a write failed
            _settle((future for _, future in running), cancel=True)
        return count * size

    def _write_sealed(self, sealed: memoryview, digest: Future[bytes]) -> None:
        frame = Frame(METHOD_RAW, len(sealed) - SEAL_OVERHEAD, len(sealed), digest.result(), self._hash)
        self._sink.write(sealed)
        self.frames.append(frame)
        self._index += 1
        self.body_size += frame.stored_len

    def _submit(self, chunk: bytes, last: bool = False, pad_to: Callable[[int], int] | None = None) -> None:
        index = self._index
        self._index += 1
        self._pending.append(
            self._pool.submit(
                _encode_frame, chunk, self._method, self._level, self._cipher, index, last, pad_to, self._hash
            )
        )
        while len(self._pending) > self._inflight:
            self._drain_one()

    def _drain_one(self) -> None:
        frame, stored = self._pending.popleft().result()
        self._sink.write(stored)
        self.frames.append(frame)
        self.body_size += frame.stored_len

    def finish(self) -> list[Frame]:
        """Encode what is buffered and wait for every frame; returns the frame table."""
        if self._buffer or (self._cipher is not None and self._index == 0):
            pad_to = None
            if self._cipher is not None and self._cipher.version >= 2:
                # The last frame's padding makes the whole object a bucket size: it needs the
                # stored size of every frame before it.
                while self._pending:
                    self._drain_one()
                before = self._object_bytes(self._index + 1) + self.body_size + SEAL_OVERHEAD
                pad_to = lambda n: padded_object_size(before + n + PAD_TRAILER) - before  # noqa: E731
            self._submit(bytes(self._buffer), last=True, pad_to=pad_to)
            self._buffer = bytearray()
        while self._pending:
            self._drain_one()
        return self.frames

    def abandon(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending.clear()


def _settle(futures: Iterable[Future[Any]], *, cancel: bool = False) -> None:
    """Wait for every job (cancelling those not started, when asked): none may still be reading
    the caller's memory, or writing a buffer about to be reused, once a write returns or
    raises. Failures are reported by whoever takes the results, or by the exception already
    raised."""
    pending = list(futures)
    for future in pending if cancel else ():
        future.cancel()
    for future in pending:
        try:
            future.result()
        except BaseException:
            pass


_SCRATCH = threading.local()


def _scratch(size: int) -> memoryview:
    """A per-thread reusable buffer of at least ``size`` bytes, viewed at exactly ``size``."""
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or len(buf) < size:
        buf = _SCRATCH.buf = bytearray(max(size, FRAME_SIZE + SEAL_OVERHEAD))
    return memoryview(buf)[:size]


def frame_offsets(frames: list[Frame], body_offset: int) -> list[tuple[int, int]]:
    """``(stored offset, raw offset)`` of every frame: where it sits in the object, and where
    its bytes go in the payload."""
    out = []
    stored_at, raw_at = body_offset, 0
    for frame in frames:
        out.append((stored_at, raw_at))
        stored_at += frame.stored_len
        raw_at += frame.raw_len
    return out


def _check(index: int, frame: Frame, stored: Any, got: int) -> None:
    """``got`` bytes of frame ``index`` were read into ``stored``: they must be all of it and
    match the table's hash (covered by the root digest) before anything else touches them."""
    if got != frame.stored_len or digests.digest(frame.hash, stored) != frame.digest:
        raise FrameError(f"frame {index} does not match its digest")


def fetch_frame(index: int, frame: Frame, offset: int, read_at: Callable[[int, int], bytes]) -> bytes:
    """The stored (still compressed, still sealed) bytes of one frame, checked."""
    stored = read_at(offset, frame.stored_len)
    _check(index, frame, stored, len(stored))
    return stored


def _decompress(index: int, frame: Frame, stored: bytes) -> bytes:
    import zstandard

    try:
        out = zstandard.ZstdDecompressor().decompress(stored, max_output_size=frame.raw_len)
    except zstandard.ZstdError as exc:  # digest matched but the data is not a valid frame
        raise FrameError(f"frame {index} does not decompress: {exc}") from None
    if len(out) != frame.raw_len:
        raise FrameError(f"frame {index} decompressed to the wrong length")
    return out


def _unseal(index: int, frame: Frame, sealed: Any, cipher: FrameCipher, last: bool) -> Any:
    """A sealed frame's raw bytes: decrypted (bound to its table entry), unpadded, decompressed."""
    content: Any = cipher.open(index, last, sealed, frame.method, frame.raw_len)
    if cipher.pads(last, frame.method):
        content = _unpad(index, content)
        if frame.method == METHOD_RAW:
            if len(content) != frame.raw_len:
                raise FrameError(f"frame {index} holds {len(content)} bytes where its table entry says {frame.raw_len}")
            return bytes(content)
    return _decompress(index, frame, content) if frame.method == METHOD_ZSTD else content


def open_frame(
    index: int,
    frame: Frame,
    offset: int,
    read_at: Callable[[int, int], bytes],
    *,
    cipher: FrameCipher | None = None,
    last: bool = False,
) -> bytes:
    """The raw bytes of one frame: fetched, checked against its SHA-256, decrypted if the
    object is sealed (``last``: it is the object's last frame, part of the nonce), then
    decompressed. Every reader of a single frame goes through here (partial reads, verify);
    :func:`open_frame_into` is the same for a frame whose place in a payload is known."""
    stored = fetch_frame(index, frame, offset, read_at)
    if cipher is not None:
        return _unseal(index, frame, stored, cipher, last)
    return _decompress(index, frame, stored) if frame.method == METHOD_ZSTD else stored


def open_frame_into(
    index: int,
    frame: Frame,
    offset: int,
    read_at: Callable[[int, int], bytes],
    readinto_at: Callable[[int, memoryview], int],
    target: memoryview,
    *,
    cipher: FrameCipher | None = None,
    last: bool = False,
) -> None:
    """:func:`open_frame`, written into ``target`` (exactly ``frame.raw_len`` bytes) without a
    second copy where the frame allows it: a raw frame is read straight into place and checked
    there; a sealed frame is read into this thread's scratch buffer (no fresh 1 MiB object per
    frame), checked, and a raw sealed frame decrypted straight into place."""
    if cipher is None:
        if frame.method == METHOD_RAW:
            _check(index, frame, target, readinto_at(offset, target))
        else:
            target[:] = open_frame(index, frame, offset, read_at)
        return
    sealed = _scratch(frame.stored_len)
    _check(index, frame, sealed, readinto_at(offset, sealed))
    if frame.method == METHOD_RAW and not cipher.pads(last, frame.method):
        cipher.open_into(index, last, sealed, target, frame.method)
    else:
        target[:] = _unseal(index, frame, sealed, cipher, last)


#: Below this a payload buffer is a plain bytearray (zero-filling it costs nothing worth saving).
_LAZY_BUFFER_BYTES = 1 << 20


def payload_buffer(size: int) -> Any:
    """A writable, contiguous buffer of ``size`` bytes that the frames are then written into.

    Not ``bytearray(size)`` for large payloads: that fills every byte with zero first, a pass
    over the whole payload (and all its page faults) on the calling thread before any frame is
    read. ``numpy.empty`` leaves the pages to be faulted in by the pool threads that write them."""
    if size < _LAZY_BUFFER_BYTES:
        return bytearray(size)
    import numpy as np

    return np.empty(size, dtype=np.uint8)


def read_frames(
    frames: list[Frame],
    body_offset: int,
    read_at: Callable[[int, int], bytes],
    readinto_at: Callable[[int, memoryview], int],
    pool: ThreadPoolExecutor,
    cipher: FrameCipher | None = None,
) -> Any:
    """Assemble the uncompressed payload: every frame opened (:func:`open_frame_into`) straight
    into its place in one preallocated buffer, on the pool (no second copy of the payload)."""
    dest = payload_buffer(sum(f.raw_len for f in frames))
    view = memoryview(dest)
    last_index = len(frames) - 1
    jobs = list(enumerate(zip(frames, frame_offsets(frames, body_offset))))

    def one(job: tuple[int, tuple[Frame, tuple[int, int]]]) -> None:
        index, (frame, (offset, start)) = job
        target = view[start : start + frame.raw_len]
        open_frame_into(index, frame, offset, read_at, readinto_at, target, cipher=cipher, last=index == last_index)

    if len(jobs) <= 1:
        for job in jobs:
            one(job)
    else:
        for _ in pool.map(one, jobs):
            pass
    return dest


def verify_stored_frames(
    frames: list[Frame],
    body_offset: int,
    read_at: Callable[[int, int], bytes],
    pool: ThreadPoolExecutor,
    *,
    decode: bool = False,
) -> None:
    """Check every stored frame against its hash: for an encrypted object all a verifier
    without keys can do (and, since the root digest covers the frame table, proof that every
    stored byte is as written). ``decode``: also decompress each frame (plaintext objects),
    one frame at a time, so checking a 300 MB object never holds its payload."""

    def one(job: tuple[int, tuple[Frame, tuple[int, int]]]) -> None:
        index, (frame, (offset, _)) = job
        if decode:
            open_frame(index, frame, offset, read_at)
        else:
            fetch_frame(index, frame, offset, read_at)

    for _ in pool.map(one, enumerate(zip(frames, frame_offsets(frames, body_offset)))):
        pass
