"""Operator extra links: the one exception to exclusive mode.

Airflow builds a task's extra links (the "Triggered DAG" button of ``TriggerDagRunOperator``,
every :class:`BaseOperatorLink`) on the API server, from the xcom row whose key is the link's
``xcom_key``, ``_link_<link class name>`` by default: it reads ``json.loads(row.value)`` straight
from the table and never calls the XCom backend. A reference in such a row shows up as the
link's text instead of its URL. So in exclusive mode a value pushed under a ``_link_*`` key
stays a plain row, and a plain row under such a key is read back, but only in the shape a link
has: a JSON string (the URL) or a small plain JSON value (no tuples, bytes, NaN, custom types),
at most :data:`MAX_LINK_BYTES` of JSON and :data:`MAX_LINK_DEPTH` levels deep. Anything else
under such a key is refused (:class:`~xcomstash.errors.ExtraLinkValueError` on push,
:class:`~xcomstash.errors.PlainRowError` on pull), so the key cannot carry data around
exclusive mode. A link row is read as the plain JSON it is, never through the structure
converter (Airflow's serde), since anyone who may write XCom rows may have written it.

The push and pull of a link row are still observed (audit, trace) on their own route,
:data:`~xcomstash.observe.events.LINK`, whether or not inline values are audited.
"""

from __future__ import annotations

import json
from typing import Any

from xcomstash.codecs.base import short_type_name
from xcomstash.errors import ExtraLinkValueError
from xcomstash.format.reference import MARKER

#: What Airflow's ``BaseOperatorLink.xcom_key`` starts with (``_link_<class name>``).
LINK_KEY_PREFIX = "_link_"
#: The largest link value kept in a row, in bytes of JSON: room for a long URL with its query
#: string, far too little to carry data around exclusive mode.
MAX_LINK_BYTES = 4096
#: How deeply a non-string link value may nest (lists and dicts).
MAX_LINK_DEPTH = 8

_SCALARS = (str, int, float, bool, type(None))


def is_link_key(key: str | None) -> bool:
    """Whether an XCom key is one Airflow builds an operator extra link from."""
    return isinstance(key, str) and key.startswith(LINK_KEY_PREFIX)


def link_value(value: Any, what: str) -> Any:
    """``value`` itself if it may stay a plain row under a link key; else
    :class:`ExtraLinkValueError` naming ``what`` (the XCom) and why."""
    problem = link_problem(value)
    if problem is not None:
        raise ExtraLinkValueError(
            f"{what}: {problem}. Exclusive mode keeps a value under an operator extra-link key "
            f"({LINK_KEY_PREFIX}*) in the xcom row, where Airflow's API server reads it, only if it is a "
            f"JSON string (a URL) or a plain JSON value of at most {MAX_LINK_BYTES:,} bytes; push other "
            "values under another key",
            rule="extra_link",
        )
    return value


def link_problem(value: Any) -> str | None:
    """Why ``value`` is not a link value (``None``: it is one). Bounded work whatever the
    value: the walk stops once it has seen more than :data:`MAX_LINK_BYTES` worth of it."""
    budget = MAX_LINK_BYTES
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1  # every JSON value takes at least one byte
        kind = type(item)
        if kind is str:
            budget -= len(item)
        elif kind is list or kind is dict:
            if depth >= MAX_LINK_DEPTH:
                return f"the value nests deeper than {MAX_LINK_DEPTH} levels"
            if kind is dict:
                if depth == 0 and MARKER in item:
                    return f"a dict with the key {MARKER!r} would read as an xcomstash reference"
                for key, sub in item.items():
                    if type(key) is not str:
                        return f"dict key of type {short_type_name(key)} is not a JSON string"
                    budget -= len(key) + 1
                    stack.append((sub, depth + 1))
            else:
                stack.extend((sub, depth + 1) for sub in item)
        elif kind not in _SCALARS:
            return f"a value of type {short_type_name(item)} is not plain JSON"
        if budget < 0:
            return f"the value is larger than {MAX_LINK_BYTES:,} bytes of JSON"
    try:
        size = len(json.dumps(value, allow_nan=False).encode())
    except ValueError as exc:  # NaN or infinity; an int too long to print
        return f"the value is not plain JSON ({exc})"
    if size > MAX_LINK_BYTES:
        return f"the value is {size:,} bytes of JSON, more than {MAX_LINK_BYTES:,}"
    return None
