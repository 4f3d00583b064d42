"""JSON for everything without a dedicated codec: dicts, lists, strings, numbers, and whatever
the structure converter turns into JSON (in Airflow: serde, so datetimes, tuples, sets, ...).

The converter is injected rather than imported so the engine never depends on Airflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from xcomstash.codecs.base import Codec, short_type_name


#: Built once: json.dumps with non-default options builds a new encoder on every call, which
#: costs more than encoding a small value.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class StructureConverter:
    """Turns a Python value into JSON-compatible structure and back (Airflow's serde in Airflow)."""

    to_structure: Callable[[Any], Any] = _identity
    from_structure: Callable[[Any], Any] = _identity
    #: Dict keys the converter gives a meaning of its own (serde's class markers). A plain JSON
    #: value free of them converts to an equal structure, so the push keeps such a value as it
    #: is when it is small (:func:`xcomstash.pipeline.route.inline_as_is`).
    reserved_keys: frozenset[str] = frozenset()


_JSON_SCALARS = (str, int, float, bool, type(None))


def _plain_json(value: Any) -> Any:
    """The value itself if JSON holds it exactly; TypeError for anything JSON would change
    (tuples, non-string keys, numpy scalars, DataFrames, ...), so the engine never returns a
    non-JSON "inline" value and never silently turns a tuple into a list."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if id(item) in seen:
                continue
            seen.add(id(item))
            if kind is list:
                stack.extend(item)
                continue
            for key, sub in item.items():
                if type(key) is not str:
                    raise TypeError(f"dict key {key!r} of type {short_type_name(key)} is not a string")
                stack.append(sub)
        elif kind not in _JSON_SCALARS:
            raise TypeError(f"{short_type_name(item)} is not plain JSON")
    return value


PLAIN_JSON = StructureConverter(to_structure=_plain_json)


class JsonCodec(Codec):
    name = "json"
    type_names = ()

    def __init__(self, converter: StructureConverter = PLAIN_JSON) -> None:
        self.converter = converter

    def estimate_size(self, value: Any) -> int:
        return len(self.dumps(self.converter.to_structure(value)))

    @staticmethod
    def dumps(structure: Any) -> bytes:
        try:
            return _ENCODER.encode(structure).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            from xcomstash.errors import UnsupportedTypeError

            raise UnsupportedTypeError(type(structure).__name__, str(exc)) from None

    def encode(self, value: Any, sink: BinaryIO) -> None:
        sink.write(self.dumps(self.converter.to_structure(value)))

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        return self.converter.from_structure(json.loads(data.tobytes()))

    def summary(self, value: Any) -> str:
        return json_summary(value)


def json_summary(value: Any) -> str:
    name = short_type_name(value)
    if isinstance(value, dict):
        return f"{name} {len(value):,} keys"
    if isinstance(value, (list, tuple, set, frozenset)):
        return f"{name} {len(value):,} items"
    if isinstance(value, str):
        return f"{name} {len(value):,} chars"
    return name
