"""MACs under keys derived from the keyset: signed references.

**Signed references.** A reference in an xcom row is only trusted if it carries
``"mac": "<key id>:<base64url HMAC-SHA256>"`` computed by a worker over every other field of
the reference (canonical JSON), under the ``reference-mac`` HKDF subkey of the producing DAG's
keyset. Anyone who can write the xcom table (REST API, SQL) but does not hold the workers'
keyset can neither forge a reference nor edit one (point it at another object, change its
digest, size, codec or allowed readers): the reader rejects it *before* touching the store.
The signed fields include the XCom the reference was written for, so a verbatim copy into
another row is caught by the reader's scope check (see the engine).

A MAC is compared as the exact string a worker writes (key id, ``:``, canonical unpadded
base64url), never after decoding: base64 decoders accept several spellings of one tag (the
unused low bits of the last character), and a signature must have exactly one form.

(Encrypted values are never deduplicated, see :mod:`xcomstash.pipeline.place`, so no blob name
is ever derived from an encrypted value's content.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Mapping

from xcomstash.security.crypto.keyset import PURPOSE_MAC, Key, Keyset, valid_key_id
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


def _mac_string(key: Key, fields: Mapping[str, Any]) -> str:
    tag = _mac(key.subkey(PURPOSE_MAC), canonical(fields))
    return f"{key.id}:{base64.urlsafe_b64encode(tag).decode().rstrip('=')}"


def sign(keyset: Keyset, fields: Mapping[str, Any]) -> str:
    """``"<primary key id>:<mac>"`` over ``fields`` (without any existing ``mac``)."""
    return _mac_string(keyset.primary, fields)


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
    expected = _mac_string(key, fields)
    # The canonical string, not the decoded bytes: one tag, one spelling.
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise ReferenceSignatureError(
            f"reference MAC does not match (key {key.id}): the row was forged or edited after "
            "a worker wrote it"
        )
    return key.id
