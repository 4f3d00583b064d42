"""The self-describing layout of a stored object.

::

    "XCSTASH1" | u32 header length | header (JSON) | [key slot] | frames ... | frame table | footer
    footer = u64 body size | u64 raw size | u32 frame count | "XCSEND01"

An encrypted object's header has an ``encryption`` block (algorithm, nonce prefix, scope mode;
no secrets) and is followed by a fixed-size key slot: the object's data key wrapped under a
keyset key, naming the key id (see :mod:`xcomstash.security.crypto.stream`). The slot is deliberately
*outside* the root digest: re-wrapping under a new key (rotation) replaces those bytes only,
and the references in the database stay valid. AES-GCM authenticates the slot itself, bound to
this header and the object's scope.

The header names the format version, codec (with the metadata it needs), compression, the
producer's Python type and the XCom coordinate, so an operator tool can decode and attribute
any object without the database. The frame table lists every body frame with its hash
(see :mod:`xcomstash.format.frames`).

The object's **root digest**, the one the reference carries, is the hash of preamble,
header, frame table and footer (not the key slot). Because the table holds each frame's own digest, checking the
root and then each frame verifies every byte, and lets a reader verify one frame at a time.

**Which hash** (:mod:`xcomstash.format.digests`): a format 2 header names it (``"hash": "blake3"``,
the default); format 1 objects, byte-identical to what earlier releases wrote, are SHA-256
throughout, and new ones still are with ``[xcomstash] hash = sha256``. The root digest string
names its hash (``blake3:<hex>``), so a reference and its object must agree on it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from xcomstash.errors import XComStashError
from xcomstash.format import digests
from xcomstash.format.frames import ENTRY, Frame, FrameError, pack_table, unpack_table

MAGIC = b"XCSTASH1"
FOOTER_MAGIC = b"XCSEND01"
#: Format 2 names its hash in the header; format 1 (no ``hash``) is SHA-256 throughout.
FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
_LEN = struct.Struct("<I")
_FOOTER = struct.Struct("<QQI8s")
PREAMBLE_SIZE = len(MAGIC) + _LEN.size
#: Size of an encrypted object's key slot; equals ``xcomstash.security.crypto.stream.KEY_SLOT_BYTES``
#: (a test pins it), repeated here so reading plaintext objects never imports cryptography.
KEY_SLOT_BYTES = 128
FOOTER_SIZE = _FOOTER.size
#: Encryption algorithms whose frames carry no padding (``xcomstash.security.crypto.stream.ALGORITHM_V1``,
#: repeated here for the same reason as the slot size); every later version pads.
UNPADDED_ALGORITHMS = ("aes256gcm-stream-v1",)


class ObjectFormatError(XComStashError):
    """The bytes are not a well-formed xcomstash object (raised before any decoding)."""


@dataclass(frozen=True)
class ObjectHeader:
    codec: str
    compression: str
    python_type: str
    codec_meta: dict[str, Any] = field(default_factory=dict)
    xcom: dict[str, Any] = field(default_factory=dict)
    #: The encryption block (``None``: a plaintext object, byte-identical to earlier versions).
    encryption: dict[str, Any] | None = None
    #: What frames and root are hashed with (:mod:`xcomstash.format.digests`).
    hash: str = digests.DEFAULT

    @property
    def format(self) -> int:
        """SHA-256 objects are written as format 1, exactly as before the hash was named."""
        return LEGACY_FORMAT_VERSION if self.hash == digests.LEGACY else FORMAT_VERSION

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": self.format,
            "codec": self.codec,
            "codec_meta": self.codec_meta,
            "compression": self.compression,
            "python_type": self.python_type,
            "xcom": self.xcom,
        }
        if self.encryption is not None:
            doc["encryption"] = self.encryption
        if self.format != LEGACY_FORMAT_VERSION:
            doc["hash"] = self.hash
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @property
    def key_slot_size(self) -> int:
        return KEY_SLOT_BYTES if self.encryption is not None else 0

    @property
    def padded(self) -> bool:
        """Whether the (encrypted) object's frames carry padding inside their seal."""
        return self.encryption is not None and self.encryption.get("alg") not in UNPADDED_ALGORITHMS


def preamble(header: ObjectHeader) -> bytes:
    """Magic, header length and header: the first bytes of every object."""
    blob = header.to_bytes()
    if len(blob) > MAX_HEADER_BYTES:
        raise ObjectFormatError(f"object header too large ({len(blob)} bytes)")
    return MAGIC + _LEN.pack(len(blob)) + blob


def outside_body(head: bytes, slot: bytes, frame_count: int) -> int:
    """Bytes of an object that are not its body: preamble and header, key slot, frame table,
    footer (what the padding of an encrypted object's last frame must account for)."""
    return len(head) + len(slot) + frame_count * ENTRY.size + FOOTER_SIZE


def trailer(frames: list[Frame], body_size: int, raw_size: int) -> bytes:
    """Frame table and footer: the last bytes of every object."""
    return pack_table(frames) + _FOOTER.pack(body_size, raw_size, len(frames), FOOTER_MAGIC)


def root_digest(head: bytes, tail: bytes, hash: str) -> str:
    """The digest a reference carries: of everything but the body and key slot (the body is
    covered by the frame hashes in ``tail``)."""
    return digests.root(hash, head + tail)


@dataclass(frozen=True)
class ObjectLayout:
    """Everything about an object except its frames' bytes, validated for consistency."""

    header: ObjectHeader
    frames: list[Frame]
    body_offset: int
    body_size: int
    raw_size: int
    digest: str
    #: The header exactly as stored (what an encrypted object's associated data covers).
    header_bytes: bytes = b""
    #: The key slot of an encrypted object, and where it starts.
    key_slot: bytes | None = None
    key_slot_offset: int = 0


def read_layout(size: int, read_at: Callable[[int, int], bytes]) -> ObjectLayout:
    """Read and validate header, frame table and footer of an object of ``size`` bytes."""
    if size < PREAMBLE_SIZE + FOOTER_SIZE:
        raise ObjectFormatError(f"object is {size} bytes, too short to be an xcomstash object")
    first = read_at(0, min(size, PREAMBLE_SIZE + 4096))
    if first[: len(MAGIC)] != MAGIC:
        raise ObjectFormatError("not an xcomstash object (bad magic)")
    (header_len,) = _LEN.unpack_from(first, len(MAGIC))
    head_end = PREAMBLE_SIZE + header_len
    if header_len > MAX_HEADER_BYTES or head_end + FOOTER_SIZE > size:
        raise ObjectFormatError(f"object header length {header_len} does not fit the object")
    head = first[:head_end] if len(first) >= head_end else read_at(0, head_end)
    header = parse_header(head[PREAMBLE_SIZE:])
    slot_size = header.key_slot_size
    body_offset = head_end + slot_size
    if body_offset + FOOTER_SIZE > size:
        raise ObjectFormatError("object is too short for its key slot")
    key_slot = None
    if slot_size:
        key_slot = first[head_end:body_offset] if len(first) >= body_offset else read_at(head_end, slot_size)
        if len(key_slot) != slot_size:
            raise ObjectFormatError("object key slot is truncated")
    footer = read_at(size - FOOTER_SIZE, FOOTER_SIZE)
    body_size, raw_size, count, end_magic = _FOOTER.unpack(footer)
    if end_magic != FOOTER_MAGIC:
        raise ObjectFormatError("object footer missing: the object is truncated or altered")
    table_size = count * ENTRY.size
    if body_offset + body_size + table_size + FOOTER_SIZE != size:
        raise ObjectFormatError(
            f"object sizes do not add up: {size} bytes, header {header_len}, body {body_size}, "
            f"{count} frames"
        )
    table = read_at(body_offset + body_size, table_size)
    try:
        frames = unpack_table(table, sealed=key_slot is not None, padded=header.padded, hash=header.hash)
    except FrameError as exc:
        raise ObjectFormatError(str(exc)) from None
    if sum(f.stored_len for f in frames) != body_size or sum(f.raw_len for f in frames) != raw_size:
        raise ObjectFormatError("frame table does not match the footer's sizes")
    return ObjectLayout(
        header=header,
        frames=frames,
        body_offset=body_offset,
        body_size=body_size,
        raw_size=raw_size,
        digest=root_digest(head, table + footer, header.hash),
        header_bytes=bytes(head[PREAMBLE_SIZE:]),
        key_slot=key_slot,
        key_slot_offset=head_end,
    )


def verified_layout(reader: Any, ref: Any) -> ObjectLayout:
    """The layout of the object ``reader`` serves, checked against the reference that names it
    (size, framing, root digest, codec) before a single payload byte is trusted.

    Every path that reads stored data (pulls, partial reads, ``xcomstash verify``) checks an
    object through this one function, so they cannot disagree on what "intact" means.
    """
    if reader.size != ref.size:
        raise ObjectFormatError(
            f"{reader.size:,} bytes where the reference says {ref.size:,} (truncated or replaced)"
        )
    layout = read_layout(reader.size, reader.read_at)
    if layout.digest != ref.digest:
        raise ObjectFormatError(f"root digest {layout.digest} does not match the reference's {ref.digest}")
    if layout.header.codec != ref.codec:
        raise ObjectFormatError(f"header codec {layout.header.codec!r} differs from the reference's {ref.codec!r}")
    return layout


def parse_header(blob: bytes) -> ObjectHeader:
    try:
        doc = json.loads(blob)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: deep nesting
        raise ObjectFormatError(f"object header is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ObjectFormatError("object header is not a JSON object")
    version = doc.get("format")
    if type(version) is not int:  # not True, 1.0 or "1"
        raise ObjectFormatError(f"unsupported object format {version!r}")
    if version == LEGACY_FORMAT_VERSION and "hash" not in doc:
        hash_name = digests.LEGACY
    elif version == FORMAT_VERSION and doc.get("hash") in tuple(digests.HASHES) and doc["hash"] != digests.LEGACY:
        hash_name = doc["hash"]
    elif version in (LEGACY_FORMAT_VERSION, FORMAT_VERSION):
        raise ObjectFormatError(f"object header of format {version} names the hash {doc.get('hash')!r}")
    else:
        raise ObjectFormatError(f"unsupported object format {version!r}")
    try:
        header = ObjectHeader(
            codec=doc["codec"],
            compression=doc["compression"],
            python_type=doc["python_type"],
            codec_meta=doc.get("codec_meta") or {},
            xcom=doc.get("xcom") or {},
            encryption=doc.get("encryption"),
            hash=hash_name,
        )
    except KeyError as exc:
        raise ObjectFormatError(f"object header lacks {exc}") from None
    if header.encryption is not None and not isinstance(header.encryption, dict):
        raise ObjectFormatError("object header's encryption block is not an object")
    if not all(isinstance(v, str) for v in (header.codec, header.compression, header.python_type)):
        raise ObjectFormatError("object header fields have the wrong type")
    if not isinstance(header.codec_meta, dict) or not isinstance(header.xcom, dict):
        raise ObjectFormatError("object header fields have the wrong type")
    return header
