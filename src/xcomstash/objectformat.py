"""The self-describing layout of a stored object.

::

    magic "XCSTASH1" | u32 header length | header (JSON) | body | footer

The header names the format version, codec (with the metadata it needs), compression, the
producer's Python type and the XCom coordinate, so an operator tool can decode and attribute
any object without the database. The footer records the body and uncompressed sizes; it is
written last, so a truncated object is detected even before the digest is checked.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from xcomstash.errors import XComStashError

MAGIC = b"XCSTASH1"
FOOTER_MAGIC = b"XCSEND01"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
_LEN = struct.Struct("<I")
_FOOTER = struct.Struct("<QQ8s")
PREAMBLE_SIZE = len(MAGIC) + _LEN.size
FOOTER_SIZE = _FOOTER.size


class ObjectFormatError(XComStashError):
    """The bytes are not a well-formed xcomstash object (raised before any decoding)."""


@dataclass(frozen=True)
class ObjectHeader:
    codec: str
    compression: str
    python_type: str
    codec_meta: dict[str, Any] = field(default_factory=dict)
    xcom: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        doc = {
            "format": self.format,
            "codec": self.codec,
            "codec_meta": self.codec_meta,
            "compression": self.compression,
            "python_type": self.python_type,
            "xcom": self.xcom,
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class ObjectFooter:
    body_size: int
    raw_size: int


def write_header(sink: BinaryIO, header: ObjectHeader) -> None:
    blob = header.to_bytes()
    if len(blob) > MAX_HEADER_BYTES:
        raise ObjectFormatError(f"object header too large ({len(blob)} bytes)")
    sink.write(MAGIC + _LEN.pack(len(blob)) + blob)


def write_footer(sink: BinaryIO, footer: ObjectFooter) -> None:
    sink.write(_FOOTER.pack(footer.body_size, footer.raw_size, FOOTER_MAGIC))


def parse(data: bytes | memoryview) -> tuple[ObjectHeader, memoryview, ObjectFooter]:
    """Split a whole object into header, body and footer, validating the framing."""
    view = memoryview(data)
    total = len(view)
    if total < PREAMBLE_SIZE + FOOTER_SIZE or bytes(view[: len(MAGIC)]) != MAGIC:
        raise ObjectFormatError("not an xcomstash object (bad magic or too short)")
    (header_len,) = _LEN.unpack(view[len(MAGIC) : PREAMBLE_SIZE])
    if header_len > MAX_HEADER_BYTES or PREAMBLE_SIZE + header_len + FOOTER_SIZE > total:
        raise ObjectFormatError(f"object header length {header_len} does not fit the object")
    header = parse_header(bytes(view[PREAMBLE_SIZE : PREAMBLE_SIZE + header_len]))
    body_size, raw_size, end_magic = _FOOTER.unpack(view[total - FOOTER_SIZE :])
    if end_magic != FOOTER_MAGIC:
        raise ObjectFormatError("object footer missing: the object is truncated")
    body_start = PREAMBLE_SIZE + header_len
    if body_start + body_size + FOOTER_SIZE != total:
        raise ObjectFormatError(
            f"object body is {total - body_start - FOOTER_SIZE} bytes, footer says {body_size}"
        )
    return header, view[body_start : body_start + body_size], ObjectFooter(body_size, raw_size)


def parse_header(blob: bytes) -> ObjectHeader:
    try:
        doc = json.loads(blob)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ObjectFormatError(f"object header is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ObjectFormatError("object header is not a JSON object")
    if doc.get("format") != FORMAT_VERSION:
        raise ObjectFormatError(f"unsupported object format {doc.get('format')!r}")
    try:
        header = ObjectHeader(
            codec=doc["codec"],
            compression=doc["compression"],
            python_type=doc["python_type"],
            codec_meta=doc.get("codec_meta") or {},
            xcom=doc.get("xcom") or {},
        )
    except KeyError as exc:
        raise ObjectFormatError(f"object header lacks {exc}") from None
    if not all(isinstance(v, str) for v in (header.codec, header.compression, header.python_type)):
        raise ObjectFormatError("object header fields have the wrong type")
    if not isinstance(header.codec_meta, dict) or not isinstance(header.xcom, dict):
        raise ObjectFormatError("object header fields have the wrong type")
    return header
