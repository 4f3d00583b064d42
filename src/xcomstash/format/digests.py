"""The content hashes a stored object can be checked with, by the name its header gives.

Every frame of an object carries a 32-byte hash of its stored bytes, and the reference in the
database carries the object's root digest (``<name>:<hex>``, see :mod:`xcomstash.format.container`).
Both are computed on every push and checked on every pull, over every byte, so the hash sets a
floor under the time of a large round trip.

- ``blake3`` (the default for new objects): a 256-bit cryptographic hash with the same 128-bit
  collision resistance as SHA-256, built on a parallel tree and SIMD, so one core hashes two to
  three times as many bytes per second as SHA-256 does with the CPU's SHA extensions
  (``python -m bench.floor`` measures both on the machine at hand).
- ``sha256``: what every object written before BLAKE3 was checked with, still read; and the
  choice where only FIPS-approved algorithms may be used (``[xcomstash] hash = sha256``).

The name is part of the digest string the reference carries (and the reference's signature
covers), and the root digest is computed with the hash the header names: an object whose header
was changed to name another hash yields a digest string that cannot equal the signed one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

from xcomstash.errors import ConfigError

DEFAULT = "blake3"
#: What objects without a ``hash`` in their header (format 1) were checked with.
LEGACY = "sha256"
DIGEST_BYTES = 32


def _blake3(data: Any) -> bytes:
    import blake3  # a compiled extension: imported on first use, like zstandard

    return blake3.blake3(data).digest()


def _sha256(data: Any) -> bytes:
    return hashlib.sha256(data).digest()


#: Hash name -> function from bytes (any buffer) to its 32-byte digest. Both release the GIL
#: on large inputs, so frames are hashed on every core.
HASHES: dict[str, Callable[[Any], bytes]] = {"blake3": _blake3, "sha256": _sha256}


def validate(name: str) -> str:
    if name not in HASHES:
        raise ConfigError(f"hash must be one of {', '.join(sorted(HASHES))}, got {name!r}")
    return name


def digest(name: str, data: Any) -> bytes:
    """The 32-byte hash of ``data`` (a frame's stored bytes)."""
    return HASHES[name](data)


def root(name: str, data: bytes) -> str:
    """The digest string a reference carries: ``<name>:<hex>``."""
    return f"{name}:{HASHES[name](data).hex()}"
