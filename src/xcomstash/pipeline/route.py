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


#: Deeper values take the converter's path, which decides (Airflow's serde has its own limit).
_MAX_PLAIN_DEPTH = 100
#: Upper bounds of the JSON text of a scalar (with its separator): a float prints in at most 24
#: characters, an int of up to 64 bits in at most 20, ``false``/``null`` in 5.
_SCALAR_BOUND = {int: 21, float: 25, bool: 6, type(None): 5}


def inline_as_is(value: Any, threshold: int, reserved_keys: frozenset[str] = frozenset()) -> bool:
    """True when ``value`` is plain JSON (exact ``dict``/``list``/``str``/number/bool/None types,
    string keys, no dict holding one of ``reserved_keys`` or our marker) whose JSON text is
    certainly shorter than ``threshold`` bytes: it then goes into the row as it is.

    This is the small-value fast path: a structure converter maps such a value to an equal
    structure, and the bound makes encoding it to measure its size unnecessary, so an inline
    push costs a walk over the value instead of a conversion plus an encoding. Anything else
    (tuples, subclasses, big ints, deep nesting, a value near the threshold) returns False and
    takes the measured path, which decides exactly. The bound: JSON (UTF-8, ``ensure_ascii``
    off) spends at most 6 bytes per character of a string (``\\u0000``), plus quotes.
    A cycle cannot loop forever: every container adds to the total until it passes the threshold.
    """
    kind = type(value)
    if kind is str:
        return 6 * len(value) + 2 < threshold
    if kind is not dict and kind is not list:
        bound = _SCALAR_BOUND.get(kind)
        return bound is not None and bound < threshold and not (kind is int and value.bit_length() > 64)
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_PLAIN_DEPTH:
            return False
        if type(item) is dict:
            if MARKER in item or (reserved_keys and not reserved_keys.isdisjoint(item)):
                return False
            for key in item:
                if type(key) is not str:
                    return False
                total += 6 * len(key) + 4
            children: Any = item.values()
        else:
            children = item
        total += 2
        for sub in children:
            kind = type(sub)
            if kind is str:
                total += 6 * len(sub) + 3
            elif kind is dict or kind is list:
                stack.append((sub, depth + 1))
            elif kind is int:
                if sub.bit_length() > 64:
                    return False
                total += 21
            else:
                bound = _SCALAR_BOUND.get(kind)
                if bound is None:
                    return False
                total += bound
        if total >= threshold:
            return False
    return True


def collides_with_marker(structure: Any) -> bool:
    """A user value that looks like our reference must not be stored inline (it is offloaded)."""
    return isinstance(structure, dict) and MARKER in structure
