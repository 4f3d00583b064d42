"""Routing: does a value stay inline in the xcom row, or go to the store?

The decision is made from sizes that are either free (``nbytes`` of arrays and frames) or a
by-product of work we must do anyway (the JSON bytes of a plain value, which become the object
body if the value is offloaded), so no value is serialized twice to decide where it goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xcomstash.format.reference import MARKER

_SCALARS = (int, float, bool, type(None))


@dataclass(frozen=True)
class Route:
    inline: bool
    reason: str


def route_by_size(size: int, *, threshold: int, exclusive: bool) -> Route:
    if exclusive:
        return Route(False, "exclusive mode")
    if size >= threshold:
        return Route(False, f"{size:,} bytes >= threshold {threshold:,}")
    return Route(True, f"{size:,} bytes < threshold {threshold:,}")


def trivially_small(value: Any, threshold: int) -> bool:
    """True for values certainly below the threshold without measuring (numbers, short strings)."""
    if type(value) in _SCALARS:
        # floats and ints of up to 64 bits print in at most 24 characters; larger ints can be long
        return threshold > 32 and not (type(value) is int and value.bit_length() > 64)
    if type(value) is str:
        # JSON escapes at most 6 bytes per character (\u0000), plus quotes.
        return len(value) * 6 + 2 < threshold
    return False


def collides_with_marker(structure: Any) -> bool:
    """A user value that looks like our reference must not be stored inline (it is offloaded)."""
    return isinstance(structure, dict) and MARKER in structure
