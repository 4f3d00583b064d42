"""What maintenance needs to know about xcom rows, independent of where they come from.

A :class:`RowSource` streams the rows of the xcom table (from Airflow's database or its REST
API); :func:`parse_stored` turns a row's value into the reference it holds, if any. Values
may come back as JSON text (rows written through ``XComModel.serialize_value``) or already
decoded (rows written through the execution API); both are accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Protocol

from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import InvalidReferenceError
from xcomstash.format.reference import MARKER, Reference


@dataclass(frozen=True)
class XComRow:
    """One xcom row as maintenance sees it."""

    coordinate: XComCoordinate
    value: Any  # the JSON value of the row (decoded)
    timestamp: datetime | None = None


@dataclass(frozen=True)
class RowFilter:
    """Which rows to read: DAG id glob, run id, and rows older/newer than a time."""

    dag_pattern: str | None = None
    run_id: str | None = None
    before: datetime | None = None
    after: datetime | None = None
    #: Only rows whose value carries the xcomstash marker (cheap to filter in the database).
    references_only: bool = False


class RowSource(Protocol):
    """Where the xcom rows are read from."""

    def iter_rows(self, selection: RowFilter) -> Iterator[XComRow]:
        """Stream rows in one consistent pass where the backend allows it."""

    def get_value(self, coordinate: XComCoordinate) -> tuple[bool, Any]:
        """``(exists, value)`` of one row, read now (used to re-check before deleting)."""


def decode_value(value: Any) -> Any:
    """A row's value as JSON data: JSON text is decoded once, anything else is returned as is."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode()
    if isinstance(value, str) and MARKER in value:
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_stored(value: Any) -> Reference | None:
    """The reference a row holds, ``None`` for anything else (inline values, legacy paths).

    Raises :class:`InvalidReferenceError` for a row that carries the marker but is malformed.
    """
    value = decode_value(value)
    if not isinstance(value, dict) or MARKER not in value:
        return None
    return Reference.from_json(value)


def reference_or_error(value: Any) -> tuple[Reference | None, str | None]:
    try:
        return parse_stored(value), None
    except InvalidReferenceError as exc:
        return None, str(exc)
