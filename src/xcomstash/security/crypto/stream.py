"""Authenticated encryption of an object body, frame by frame (a streaming AEAD).

The construction is the one Tink's streaming AEAD (AES-GCM-HKDF-STREAMING) and the STREAM
scheme of Hoang, Reyhanitabar, Rogaway and Vizár ("Online Authenticated-Encryption and its
Nonce-Reuse Misuse-Resistance", CRYPTO 2015) use, with AES-256-GCM from ``cryptography``
(OpenSSL) as the only primitive:

- every object gets a fresh random 256-bit **data key**; it is wrapped (AES-256-GCM) into a
  fixed-size **key slot** that names the key id, under a **wrap key of its own**: HKDF-SHA256
  of the keyset primary's ``wrap`` subkey with a random 128-bit per-object salt kept in the slot
  (so no long-lived key ever encrypts more than once, and GCM's per-key message limit and
  random-nonce collisions do not apply; version-1 slots, written before, used the subkey
  itself and stay readable);
- each body frame (1 MiB of plaintext, see :mod:`xcomstash.format.frames`) is sealed with AES-256-GCM
  under the data key with the nonce ``prefix (7 random bytes) || frame index (u32, big-endian)
  || last-frame flag (1 byte)``, so frames cannot be reordered, dropped from the end, or
  moved to another object without the tag check failing;
- the associated data of every frame and of the key slot is the **object AAD**: SHA-256 over
  the object header (codec, XCom, nonce prefix, scope mode: everything but the key slot) and
  the **scope** the reader expects (DAG id, and run id when configured). The reader computes
  the scope from what it was asked to read, never from the object, so an object (or its
  reference) copied into another DAG's place does not decrypt; the header names the XCom, and
  the reader checks it against the one it asked for (another XCom's object of the same DAG
  decrypts, but is refused).
- **version 2** (``aes256gcm-stream-v2``, written since; version 1 stays readable): each
  frame's associated data also holds its table entry's ``method`` and ``raw_len``, so a frame
  cannot be relabelled (stored compressed bytes handed over as raw, or the reverse) even where
  unsigned references let someone rewrite the root digest; and frames carry padding inside
  the seal (see :mod:`xcomstash.format.frames`), so stored sizes come in buckets
  (:func:`padded_object_size`) instead of telling the exact (compressed) size.

Because the data key is wrapped in a separate fixed-size slot that the header digest does not
cover, rotating keys (re-wrapping) rewrites 128 bytes per object and leaves the body and the
root digest the reference carries untouched.

Failures are typed: :class:`~xcomstash.errors.KeyUnavailableError` when the slot names a key
this worker lacks, :class:`~xcomstash.errors.DecryptionError` for everything else.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xcomstash.security.crypto.keyset import MAX_KEY_ID_CHARS, PURPOSE_WRAP, Keyset, valid_key_id
from xcomstash.errors import ConfigError, DecryptionError

#: The algorithm name written into new object headers.
ALGORITHM = "aes256gcm-stream-v2"
#: The first version: frames bound only to index and position, no padding (still read).
ALGORITHM_V1 = "aes256gcm-stream-v1"
ALGORITHMS = {ALGORITHM_V1: 1, ALGORITHM: 2}
NONCE_PREFIX_BYTES = 7
TAG_BYTES = 16
DATA_KEY_BYTES = 32
MAX_FRAMES = 2**32 - 1
SCOPE_DAG = "dag"
SCOPE_RUN = "run"
SCOPE_MODES = (SCOPE_DAG, SCOPE_RUN)

#: Version 1 slots: the data key wrapped directly under the ``wrap`` subkey (read only).
SLOT_MAGIC_V1 = b"XKS1"
#: Version 2 slots: wrapped under a per-object key derived with the slot's salt.
SLOT_MAGIC = b"XKS2"
SLOT_SALT_BYTES = 16
_SLOT_HEAD = struct.Struct(f"<4sB{MAX_KEY_ID_CHARS}s12s{DATA_KEY_BYTES + TAG_BYTES}s")
_SLOT_SALT = struct.Struct(f"<{SLOT_SALT_BYTES}s")
#: Fixed so that a re-wrap can replace the slot without moving anything else.
KEY_SLOT_BYTES = 128
_FRAME_NONCE = struct.Struct(">7sIB")
#: What version 2 adds to a frame's associated data: its table entry's method and raw length.
_FRAME_AAD = struct.Struct("<BI")
_WRAP_INFO = b"xcomstash/v2/object-wrap-key"
#: ``AESGCM.encrypt_into`` / ``decrypt_into`` (cryptography 47 and later): seal and open into a
#: caller's buffer. Older releases (those Airflow 3.1's constraints pin) encrypt into a new
#: object that is then copied into place: the same bytes, one copy more.
_INTO = hasattr(AESGCM, "encrypt_into") and hasattr(AESGCM, "decrypt_into")


@dataclass(frozen=True)
class Scope:
    """What an object is bound to: its DAG, and its run when the deployment asks for that."""

    dag_id: str
    run_id: str | None = None

    @classmethod
    def of(cls, mode: str, dag_id: str, run_id: str) -> Scope:
        if mode not in SCOPE_MODES:
            raise ConfigError(f"encryption scope must be one of {SCOPE_MODES}, got {mode!r}")
        return cls(dag_id, run_id if mode == SCOPE_RUN else None)

    def to_bytes(self) -> bytes:
        dag = self.dag_id.encode()
        out = struct.pack("<I", len(dag)) + dag
        if self.run_id is None:
            return out + b"\x00"
        run = self.run_id.encode()
        return out + b"\x01" + struct.pack("<I", len(run)) + run

    def __str__(self) -> str:
        return f"dag {self.dag_id!r}" + ("" if self.run_id is None else f", run {self.run_id!r}")


@dataclass(frozen=True)
class Envelope:
    """The encryption parameters recorded in the object header (no secrets)."""

    nonce_prefix: bytes
    scope_mode: str = SCOPE_DAG
    algorithm: str = ALGORITHM

    @classmethod
    def new(cls, scope_mode: str = SCOPE_DAG) -> Envelope:
        if scope_mode not in SCOPE_MODES:
            raise ConfigError(f"encryption scope must be one of {SCOPE_MODES}, got {scope_mode!r}")
        return cls(os.urandom(NONCE_PREFIX_BYTES), scope_mode)

    def to_header(self) -> dict[str, object]:
        return {
            "alg": self.algorithm,
            "nonce_prefix": self.nonce_prefix.hex(),
            "scope": self.scope_mode,
            "key_slot": KEY_SLOT_BYTES,
        }

    @classmethod
    def from_header(cls, doc: object) -> Envelope:
        """Parse the header's ``encryption`` block; anything unexpected is a DecryptionError."""
        if not isinstance(doc, dict):
            raise DecryptionError("object header has a malformed encryption block")
        alg, prefix, scope, slot = doc.get("alg"), doc.get("nonce_prefix"), doc.get("scope"), doc.get("key_slot")
        if alg not in ALGORITHMS:
            raise DecryptionError(f"unsupported encryption algorithm {alg!r:.40}")
        if scope not in SCOPE_MODES or slot != KEY_SLOT_BYTES:
            raise DecryptionError("object header has a malformed encryption block")
        try:
            raw = bytes.fromhex(prefix) if isinstance(prefix, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != NONCE_PREFIX_BYTES:
            raise DecryptionError("object header has a malformed nonce prefix")
        return cls(raw, scope, alg)

    @property
    def version(self) -> int:
        return ALGORITHMS[self.algorithm]

    def scope_for(self, dag_id: str, run_id: str) -> Scope:
        return Scope.of(self.scope_mode, dag_id, run_id)


def object_aad(header: bytes, scope: Scope) -> bytes:
    """The associated data binding frames and key slot to one header and one scope."""
    h = hashlib.sha256(b"xcomstash-object-aad-v1\x00")
    h.update(struct.pack("<Q", len(header)))
    h.update(header)
    h.update(scope.to_bytes())
    return h.digest()


def scope_aad(header_bytes: bytes, envelope: Envelope, dag_id: str, run_id: str) -> bytes:
    """The associated data of one object read or written for one DAG run: the single place
    that says what an object's key slot and frames are bound to (push, pull and re-wrap)."""
    return object_aad(header_bytes, envelope.scope_for(dag_id, run_id))


def seal_object(
    keyset: Keyset, envelope: Envelope, header_bytes: bytes, dag_id: str, run_id: str
) -> tuple[bytes, FrameCipher]:
    """A fresh data key wrapped into a key slot, and the cipher that seals the object's frames."""
    aad = scope_aad(header_bytes, envelope, dag_id, run_id)
    data_key = new_data_key()
    return wrap(keyset, data_key, aad), FrameCipher(data_key, envelope, aad)


def open_object(
    keyset: Keyset, envelope: Envelope, header_bytes: bytes, slot: bytes, dag_id: str, run_id: str
) -> FrameCipher:
    """The cipher that opens an object's frames: its data key unwrapped for this scope."""
    aad = scope_aad(header_bytes, envelope, dag_id, run_id)
    return FrameCipher(unwrap(keyset, slot, aad), envelope, aad)


def _wrap_aad(key_id: str, aad: bytes, version: int) -> bytes:
    return b"xcomstash-wrap-v%d\x00" % version + key_id.encode() + b"\x00" + aad


def _object_wrap_key(wrap_subkey: bytes, salt: bytes) -> bytes:
    """The key one slot is wrapped under: HKDF-SHA256 of the keyset key's wrap subkey with the
    slot's random salt, so every object's data key is sealed under a key used once."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_WRAP_INFO).derive(wrap_subkey)


# ------------------------------------------------------------------ key slot


@dataclass(frozen=True)
class KeySlot:
    """``salt`` empty: a version 1 slot (wrapped under the wrap subkey itself)."""

    key_id: str
    nonce: bytes
    wrapped: bytes
    salt: bytes = b""

    @property
    def version(self) -> int:
        return 2 if self.salt else 1

    def to_bytes(self) -> bytes:
        magic = SLOT_MAGIC if self.salt else SLOT_MAGIC_V1
        out = _SLOT_HEAD.pack(magic, len(self.key_id), self.key_id.encode(), self.nonce, self.wrapped)
        if self.salt:
            out += _SLOT_SALT.pack(self.salt)
        return out + bytes(KEY_SLOT_BYTES - len(out))

    @classmethod
    def parse(cls, blob: bytes) -> KeySlot:
        if len(blob) != KEY_SLOT_BYTES:
            raise DecryptionError(f"key slot is {len(blob)} bytes, not {KEY_SLOT_BYTES}")
        magic, id_len, raw_id, nonce, wrapped = _SLOT_HEAD.unpack_from(blob)
        end = _SLOT_HEAD.size
        salt = b""
        if magic == SLOT_MAGIC:
            (salt,) = _SLOT_SALT.unpack_from(blob, end)
            end += _SLOT_SALT.size
        if magic not in (SLOT_MAGIC, SLOT_MAGIC_V1) or id_len > MAX_KEY_ID_CHARS or any(blob[end:]):
            raise DecryptionError("key slot is malformed (altered or not an encrypted object)")
        if any(raw_id[id_len:]):
            raise DecryptionError("key slot is malformed (key id padding)")
        try:
            key_id = raw_id[:id_len].decode("ascii")
        except UnicodeDecodeError:
            key_id = ""
        if not valid_key_id(key_id):
            raise DecryptionError("key slot names an invalid key id")
        return cls(key_id, nonce, wrapped, salt)


def wrap(keyset: Keyset, data_key: bytes, aad: bytes) -> bytes:
    """Seal ``data_key`` under the keyset's primary key: the object's key slot (version 2, under
    a wrap key derived for this slot alone)."""
    key = keyset.primary
    salt, nonce = os.urandom(SLOT_SALT_BYTES), os.urandom(12)
    wrap_key = _object_wrap_key(key.subkey(PURPOSE_WRAP), salt)
    wrapped = AESGCM(wrap_key).encrypt(nonce, data_key, _wrap_aad(key.id, aad, 2))
    return KeySlot(key.id, nonce, wrapped, salt).to_bytes()


def unwrap(keyset: Keyset, slot: bytes, aad: bytes) -> bytes:
    """The data key in ``slot`` (version 1 or 2); KeyUnavailableError if the keyset lacks its
    key, DecryptionError if the slot, header or scope do not match."""
    parsed = KeySlot.parse(slot)
    key = keyset.get(parsed.key_id)
    wrap_key = key.subkey(PURPOSE_WRAP)
    if parsed.version == 2:
        wrap_key = _object_wrap_key(wrap_key, parsed.salt)
    try:
        data_key = AESGCM(wrap_key).decrypt(parsed.nonce, parsed.wrapped, _wrap_aad(key.id, aad, parsed.version))
    except InvalidTag:
        raise DecryptionError(
            f"cannot unwrap the data key with key {key.id}: the object's header or key slot was "
            "altered, or the object was copied from another scope (DAG or run)"
        ) from None
    if len(data_key) != DATA_KEY_BYTES:
        raise DecryptionError("unwrapped data key has the wrong length")
    return data_key


def slot_key_id(slot: bytes) -> str:
    return KeySlot.parse(slot).key_id


def rewrap(keyset: Keyset, slot: bytes, aad: bytes) -> bytes | None:
    """The slot re-sealed under the primary key, or ``None`` if it already is (so a rotation
    run can be repeated or resumed and does no work twice)."""
    if KeySlot.parse(slot).key_id == keyset.primary_id:
        return None
    return wrap(keyset, unwrap(keyset, slot, aad), aad)


def new_data_key() -> bytes:
    return os.urandom(DATA_KEY_BYTES)


# ------------------------------------------------------------------- frames


class FrameCipher:
    """Seals and opens the frames of one object. Thread-safe: frames are independent, so the
    frame pool encrypts and decrypts them in parallel (``cryptography`` releases the GIL while
    OpenSSL works).

    ``method`` and ``raw_len`` are the frame's table entry: version 2 authenticates them with
    the frame (version 1 ignores them). The frame layer pads what it seals where
    :meth:`pads` says so."""

    def __init__(self, data_key: bytes, envelope: Envelope, aad: bytes) -> None:
        self._aead = AESGCM(data_key)
        self._prefix = envelope.nonce_prefix
        self._aad = aad
        #: The envelope version: 2 binds table entries and pads frames.
        self.version = envelope.version
        #: Seconds each seal or open took (appended from the frame threads: list.append is
        #: atomic, a float ``+=`` is not), for the encryption-time metric.
        self._timings: list[float] = []

    @property
    def seconds(self) -> float:
        """Seconds spent sealing and opening frames so far, summed over the frame threads."""
        return sum(self._timings)

    def pads(self, last: bool, method: int) -> bool:
        """Whether the frame's sealed bytes carry padding (version 2: the last frame, whose
        length would tell the object's exact size, and every compressed frame, whose length
        would tell how well it compressed). Full raw frames have a fixed size: no padding."""
        return self.version >= 2 and (last or method != 0)

    def _nonce(self, index: int, last: bool) -> bytes:
        if not 0 <= index <= MAX_FRAMES:
            raise DecryptionError(f"frame index {index} out of range")
        return _FRAME_NONCE.pack(self._prefix, index, 1 if last else 0)

    def _frame_aad(self, method: int, raw_len: int) -> bytes:
        if self.version == 1:
            return self._aad
        if not (0 <= method <= 255 and 0 <= raw_len < 2**32):
            raise DecryptionError("frame table entry out of range")
        return self._aad + _FRAME_AAD.pack(method, raw_len)

    def seal(
        self, index: int, last: bool, plaintext: bytes | memoryview, method: int = 0, raw_len: int | None = None
    ) -> bytes:
        raw_len = len(plaintext) if raw_len is None else raw_len
        started = time.perf_counter()
        # The buffer as it is, not bytes(plaintext): AESGCM reads any contiguous buffer, and the
        # copy cost a pass over every sealed frame.
        sealed = self._aead.encrypt(self._nonce(index, last), plaintext, self._frame_aad(method, raw_len))
        self._timings.append(time.perf_counter() - started)
        return sealed

    def seal_into(self, index: int, last: bool, plaintext: memoryview, target: memoryview, method: int = 0) -> None:
        """Seal an unpadded frame into ``target`` (exactly its length plus the tag): a writer
        that reuses its buffers allocates nothing per frame."""
        if len(target) != len(plaintext) + TAG_BYTES:
            raise ValueError(f"frame {index}: the target must be the plaintext length plus the tag")
        started = time.perf_counter()
        nonce, aad = self._nonce(index, last), self._frame_aad(method, len(plaintext))
        if _INTO:
            self._aead.encrypt_into(nonce, plaintext, aad, target)
        else:
            target[:] = self._aead.encrypt(nonce, plaintext, aad)
        self._timings.append(time.perf_counter() - started)

    def open(
        self, index: int, last: bool, sealed: bytes | memoryview, method: int = 0, raw_len: int | None = None
    ) -> bytes:
        raw_len = len(sealed) - TAG_BYTES if raw_len is None else raw_len
        started = time.perf_counter()
        try:
            return self._aead.decrypt(self._nonce(index, last), sealed, self._frame_aad(method, raw_len))
        except InvalidTag:
            raise _frame_failure(index, last) from None
        finally:
            self._timings.append(time.perf_counter() - started)

    def open_into(
        self, index: int, last: bool, sealed: bytes | memoryview, target: memoryview, method: int = 0
    ) -> None:
        """Decrypt straight into ``target`` (exactly the plaintext length, an unpadded raw
        frame): no extra copy."""
        if len(target) != len(sealed) - TAG_BYTES:
            raise DecryptionError(f"frame {index} has the wrong sealed length")
        started = time.perf_counter()
        nonce, aad = self._nonce(index, last), self._frame_aad(method, len(target))
        try:
            if _INTO:
                self._aead.decrypt_into(nonce, sealed, aad, target)
            else:
                target[:] = self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise _frame_failure(index, last) from None
        finally:
            self._timings.append(time.perf_counter() - started)


def _frame_failure(index: int, last: bool) -> DecryptionError:
    where = "last frame" if last else f"frame {index}"
    return DecryptionError(
        f"authentication failed on the {where}: the body or its frame table entry was altered, "
        "truncated, reordered or swapped with another object's"
    )
