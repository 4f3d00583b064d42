"""The pointer stored in the xcom row in place of an offloaded value.

A reference is a small JSON object that reads well in the Airflow UI (where the value lives,
how big it is, what it is) and carries everything a reader needs to check what it fetched:
the exact object size and a SHA-256 digest. The marker key holds the format version, so a
reference can never be confused with a user's own value: the engine offloads any user value
whose JSON form would carry the marker, so every marker found in a row was written by us.

Since objects are content-addressed (one blob may serve several XComs of a run), a reference
also names the XCom it was written for (``xcom``): errors can then say which XCom failed, and
read-ahead can find the next mapped output. References written before carry no ``xcom``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from xcomstash.security.readers import Readers
from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import InvalidReferenceError

MARKER = "__xcomstash__"
FORMAT_VERSION = 1
MAX_SUMMARY_CHARS = 120
MAX_URI_CHARS = 1100
#: ``<hash>:<hex>``, the hash one of :data:`xcomstash.format.digests.HASHES`.
_DIGEST_RE = re.compile(r"^(sha256|blake3):[0-9a-f]{64}$")
_FIELDS = {MARKER, "uri", "size", "digest", "codec", "type", "summary"}
#: ``readers``: who may read the value (see :mod:`xcomstash.security.readers`); ``mac``: the signature
#: over every other field (see :mod:`xcomstash.security.signing`).
#: ``locations``: with several store locations, the roots of those that took the object.
_OPTIONAL_FIELDS = {"xcom", "readers", "locations", "mac"}
MAX_LOCATIONS = 16
MAX_MAC_CHARS = 100
MAX_XCOM_FIELD_CHARS = 1000


@dataclass(frozen=True)
class Reference:
    uri: str
    size: int
    digest: str
    codec: str
    python_type: str
    summary: str
    #: The XCom this reference was written for (``None`` in references from before dedup).
    xcom: XComCoordinate | None = None
    #: Who may read the value (``None``: anyone who can read the row).
    readers: Readers | None = None
    #: With a replicated store: the root URIs of the locations that held the object when it
    #: was pushed (``None``: one location, or not known). Reads try these first; ``repair``
    #: copies to the others.
    locations: tuple[str, ...] | None = None
    #: ``"<key id>:<HMAC>"`` when the reference is signed.
    mac: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to the xcom row (key order chosen for the UI)."""
        doc: dict[str, Any] = {
            MARKER: FORMAT_VERSION,
            "summary": self.summary,
            "type": self.python_type,
            "codec": self.codec,
            "size": self.size,
            "uri": self.uri,
            "digest": self.digest,
        }
        if self.xcom is not None:
            doc["xcom"] = self.xcom.as_dict()
        if self.readers is not None:
            doc["readers"] = self.readers.to_json()
        if self.locations is not None:
            doc["locations"] = list(self.locations)
        if self.mac is not None:
            doc["mac"] = self.mac
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> Reference:
        """Parse and validate a reference; any deviation is an :class:`InvalidReferenceError`."""
        if not isinstance(obj, dict) or MARKER not in obj:
            raise InvalidReferenceError("not an xcomstash reference (no marker)")
        version = obj[MARKER]
        if version != FORMAT_VERSION or isinstance(version, bool):
            raise InvalidReferenceError(
                f"unsupported xcomstash reference version {version!r}; this worker reads version "
                f"{FORMAT_VERSION} (is an older xcomstash installed here than on the producer?)"
            )
        unknown = set(obj) - _FIELDS - _OPTIONAL_FIELDS
        missing = _FIELDS - set(obj)
        if unknown or missing:
            raise InvalidReferenceError(
                f"malformed xcomstash reference: missing fields {sorted(missing)}, "
                f"unknown fields {sorted(unknown)}"
            )
        uri, size, digest = obj["uri"], obj["size"], obj["digest"]
        if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_CHARS:
            raise InvalidReferenceError(f"malformed xcomstash reference: bad uri {uri!r:.200}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidReferenceError(f"malformed xcomstash reference: bad size {size!r:.50}")
        if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
            raise InvalidReferenceError(f"malformed xcomstash reference: bad digest {digest!r:.100}")
        for field in ("codec", "type", "summary"):
            if not isinstance(obj[field], str) or len(obj[field]) > 200:
                raise InvalidReferenceError(f"malformed xcomstash reference: bad {field}")
        xcom = None
        if "xcom" in obj:
            xcom = XComCoordinate.from_dict(obj["xcom"])
            if xcom is None or len(str(xcom)) > MAX_XCOM_FIELD_CHARS:
                raise InvalidReferenceError("malformed xcomstash reference: bad xcom")
        readers = Readers.from_json(obj["readers"]) if "readers" in obj else None
        locations = obj.get("locations")
        if locations is not None:
            if (
                not isinstance(locations, list)
                or not 1 <= len(locations) <= MAX_LOCATIONS
                or not all(isinstance(u, str) and 0 < len(u) <= MAX_URI_CHARS for u in locations)
            ):
                raise InvalidReferenceError("malformed xcomstash reference: bad locations")
            locations = tuple(locations)
        mac = obj.get("mac")
        if mac is not None and (not isinstance(mac, str) or len(mac) > MAX_MAC_CHARS):
            raise InvalidReferenceError("malformed xcomstash reference: bad mac")
        return cls(
            uri=uri,
            size=size,
            digest=digest,
            codec=obj["codec"],
            python_type=obj["type"],
            summary=obj["summary"],
            xcom=xcom,
            readers=readers,
            locations=locations,
            mac=mac,
        )


def is_reference(obj: Any) -> bool:
    """True when a stored xcom value carries our marker (it may still be malformed)."""
    return isinstance(obj, dict) and MARKER in obj


def clip_summary(text: str) -> str:
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1] + "…"
