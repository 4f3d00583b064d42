"""MACs under keys derived from the keyset: signed references, and keyed blob names.

**Signed references.** A reference in an xcom row is only trusted if it carries
``"mac": "<key id>:<base64url HMAC-SHA256>"`` computed by a worker over every other field of
the reference (canonical JSON), under the ``reference-mac`` HKDF subkey of the producing DAG's
keyset. Anyone who can write the xcom table (REST API, SQL) but does not hold the workers'
keyset can neither forge a reference nor edit one (point it at another object, change its
digest, size, codec or allowed readers): the reader rejects it *before* touching the store.
The signed fields include the XCom the reference was written for, so a verbatim copy into
another row is caught by the reader's scope check (see the engine).

**Keyed blob names.** Deduplicated blobs are named by content; under encryption a plain
SHA-256 of the plaintext would let anyone with bucket read access confirm a guessed value.
:func:`blob_name` is an HMAC of the content digest under the ``blob-name`` subkey, so names
reveal nothing without the key and stay stable per (keyset primary, content).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any, Mapping

from xcomstash.security.crypto.keyset import PURPOSE_DEDUP, PURPOSE_MAC, Keyset, valid_key_id
from xcomstash.errors import ReferenceSignatureError

MAC_FIELD = "mac"
_DOMAIN = b"xcomstash-reference-mac-v1\x00"
_BLOB_DOMAIN = b"xcomstash-blob-name-v1\x00"
_MAC_B64_CHARS = 43  # 32 bytes, base64url without padding


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes a MAC covers: every field except the MAC, as sorted, compact, ASCII JSON."""
    doc = {k: v for k, v in fields.items() if k != MAC_FIELD}
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ReferenceSignatureError(f"reference fields cannot be signed: {exc}") from None


def _mac(keyset_key: bytes, payload: bytes) -> bytes:
    return hmac.new(keyset_key, _DOMAIN + payload, hashlib.sha256).digest()


def sign(keyset: Keyset, fields: Mapping[str, Any]) -> str:
    """``"<primary key id>:<mac>"`` over ``fields`` (without any existing ``mac``)."""
    key = keyset.primary
    tag = _mac(key.subkey(PURPOSE_MAC), canonical(fields))
    return f"{key.id}:{base64.urlsafe_b64encode(tag).decode().rstrip('=')}"


def signed(keyset: Keyset, fields: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in fields.items() if k != MAC_FIELD}
    out[MAC_FIELD] = sign(keyset, out)
    return out


def mac_key_id(mac: object) -> str:
    """The key id a MAC names; ReferenceSignatureError if the MAC is not well formed."""
    if not isinstance(mac, str) or len(mac) > 100:
        raise ReferenceSignatureError("reference MAC is malformed")
    key_id, sep, tag = mac.partition(":")
    if not sep or not valid_key_id(key_id) or len(tag) != _MAC_B64_CHARS:
        raise ReferenceSignatureError("reference MAC is malformed")
    return key_id


def verify(keyset: Keyset, fields: Mapping[str, Any]) -> str:
    """Check ``fields[mac]`` against the other fields; returns the key id that signed them.

    Raises :class:`ReferenceSignatureError` when the MAC is missing, malformed or wrong, and
    :class:`KeyUnavailableError` when it names a key this keyset does not hold."""
    if MAC_FIELD not in fields:
        raise ReferenceSignatureError(
            "reference is not signed, but this deployment requires signed references "
            "(a row written without the workers' key, e.g. through the REST API or SQL)"
        )
    mac = fields[MAC_FIELD]
    key = keyset.get(mac_key_id(mac))
    try:
        tag = base64.urlsafe_b64decode(mac.partition(":")[2] + "=")
    except (binascii.Error, ValueError):
        raise ReferenceSignatureError("reference MAC is malformed") from None
    expected = _mac(key.subkey(PURPOSE_MAC), canonical(fields))
    if not hmac.compare_digest(tag, expected):
        raise ReferenceSignatureError(
            f"reference MAC does not match (key {key.id}): the row was forged or edited after "
            "a worker wrote it"
        )
    return key.id


def blob_name(keyset: Keyset, content_digest: bytes) -> str:
    """A 64-hex-character name for content, keyed so it reveals nothing about the content."""
    return hmac.new(
        keyset.primary.subkey(PURPOSE_DEDUP), _BLOB_DOMAIN + content_digest, hashlib.sha256
    ).hexdigest()
