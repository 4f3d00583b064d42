"""JSON for everything without a dedicated codec: dicts, lists, strings, numbers, and whatever
the structure converter turns into JSON (in Airflow: serde, so datetimes, tuples, sets, ...).

The converter is injected rather than imported so the engine never depends on Airflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from xcomstash.codecs.base import Codec, short_type_name


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class StructureConverter:
    """Turns a Python value into JSON-compatible structure and back (Airflow's serde in Airflow)."""

    to_structure: Callable[[Any], Any] = _identity
    from_structure: Callable[[Any], Any] = _identity


PLAIN_JSON = StructureConverter()


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
            return json.dumps(structure, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            from xcomstash.errors import UnsupportedTypeError

            raise UnsupportedTypeError(type(structure).__name__, str(exc)) from None

    def encode(self, value: Any, sink: BinaryIO) -> None:
        sink.write(self.dumps(self.converter.to_structure(value)))

    def decode(self, source: BinaryIO, meta: dict[str, Any]) -> Any:
        return self.converter.from_structure(json.loads(source.read()))

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
