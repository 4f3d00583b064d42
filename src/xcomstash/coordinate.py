"""Where an XCom lives in Airflow's terms, and the object key it maps to in a store.

The object key is deterministic per XCom so that a retried task overwrites its previous object
instead of leaking a new one, and so that an object in a listing maps back to its xcom row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import quote, unquote

#: S3 limits keys to 1,024 bytes; leave room for a store prefix.
MAX_KEY_BYTES = 900
#: Suffix of every stored object, so an operator can tell our objects from anything else.
OBJECT_SUFFIX = ".xcs"
_COMPONENT_BUDGET = 200
#: The key part of an empty component: quote() never outputs a lone "%" (it would be "%25"),
#: while "%00" (used before) is also the encoding of "\x00", so "" and "\x00" collided.
_EMPTY = "%"


@dataclass(frozen=True)
class XComCoordinate:
    """The identity of one XCom row: the same five fields Airflow's xcom table is keyed on."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str

    def __str__(self) -> str:
        return (
            f"dag_id={self.dag_id!r} run_id={self.run_id!r} task_id={self.task_id!r} "
            f"map_index={self.map_index} key={self.key!r}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "key": self.key,
        }

    def object_key(self) -> str:
        """Return the store key: ``dag/run/task/map_index/key.xcs``, each part percent-encoded.

        Percent-encoding keeps ``/``, ``..``, control and non-ASCII characters out of the path
        (so no traversal and no ambiguity), and is reversible. A component longer than its
        budget is cut and suffixed with a hash of the whole component, so keys stay unique and
        within S3's limit; the full coordinate is also in the object header for such cases.
        """
        parts = [
            _encode_component(self.dag_id),
            _encode_component(self.run_id),
            _encode_component(self.task_id),
            str(int(self.map_index)),
            _encode_component(self.key),
        ]
        key = "/".join(parts) + OBJECT_SUFFIX
        assert len(key.encode()) <= MAX_KEY_BYTES
        return key

    @classmethod
    def from_object_key(cls, key: str) -> XComCoordinate | None:
        """Map a store key back to its coordinate; ``None`` if the key was shortened or is not ours."""
        if not key.endswith(OBJECT_SUFFIX):
            return None
        parts = key[: -len(OBJECT_SUFFIX)].split("/")
        if len(parts) != 5 or any("!" in p for p in parts):
            return None
        try:
            map_index = int(parts[3])
        except ValueError:
            return None
        dag_id, run_id, task_id, _, xkey = ("" if p == _EMPTY else unquote(p) for p in parts)
        return cls(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, key=xkey)


def _encode_component(text: str) -> str:
    encoded = quote(text, safe="-_.+=:@,") or _EMPTY
    # A lone "." or ".." would be a path step on a filesystem store.
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    if len(encoded) <= _COMPONENT_BUDGET:
        return encoded
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return f"{encoded[:_COMPONENT_BUDGET - 26]}!{digest}"
