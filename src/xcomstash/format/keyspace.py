"""What a store key is: a content-addressed blob, a link, a per-XCom object, or not ours.

Layout (see :mod:`xcomstash.coordinate`): ``<dag>/<run>/.blobs/<hex>.xcs``,
``<dag>/<run>/.links/<task>/<map_index>/<key>/<hex>`` and ``<dag>/<run>/<task>/<map>/<key>.xcs``.
Everything of one DAG run sits under ``<dag>/<run>/``, which is what lets reconcile decide
run by run from a streamed listing.
"""

from __future__ import annotations

from enum import Enum

from xcomstash.coordinate import XComCoordinate, decode_component, is_object_key, parse_blob_key, parse_link_key


#: How the probe objects of ``xcomstash check`` are named (at the root of a store, deleted at
#: once): a key no XCom can have (key components are percent-encoded, so never start with
#: ``!``); reconcile and stats skip it, as they skip the audit log's ``!audit/``.
PROBE_PREFIX = "!check-"

#: Keys starting with this are xcomstash's own records, not values: the audit log
#: (``!audit/``) and the maintenance records (``!maintenance/``). ``!`` cannot start a
#: percent-encoded DAG id, so no value's key does; reconcile, purge and listings skip them.
RESERVED = "!"


def is_reserved(key: str) -> bool:
    return key.startswith(RESERVED)


class KeyKind(str, Enum):
    BLOB = "blob"
    LINK = "link"
    OBJECT = "object"  # per-XCom object (dedup off, or written before dedup)
    TEMP = "temp"  # a local store's upload in progress, or left by a killed writer
    FOREIGN = "foreign"  # not written by xcomstash: reported, never deleted


def classify(key: str) -> KeyKind:
    parts = key.split("/")
    if parts[-1].startswith(".tmp-") and parts[-1].endswith(".part"):
        return KeyKind.TEMP
    if len(parts) == 4 and parse_blob_key(key) is not None:
        return KeyKind.BLOB
    if len(parts) == 7 and parse_link_key(key) is not None:
        return KeyKind.LINK
    if len(parts) == 5 and is_object_key(key):
        return KeyKind.OBJECT
    return KeyKind.FOREIGN


def run_group(key: str) -> str:
    """``<dag>/<run>`` of a key (the unit reconcile decides on); the key itself if shorter."""
    first = key.find("/")
    if first < 0:
        return key
    second = key.find("/", first + 1)
    return key if second < 0 else key[:second]


def dag_of(key: str) -> str:
    """The DAG part of a key, decoded, for reports ("by DAG")."""
    head = key.split("/", 1)[0]
    return decode_component(head) or head


def xcom_of_key(key: str) -> XComCoordinate | None:
    """The XCom a link or per-XCom object belongs to (``None`` for blobs and foreign keys)."""
    kind = classify(key)
    if kind is KeyKind.OBJECT:
        return XComCoordinate.from_object_key(key)
    if kind is KeyKind.LINK:
        return XComCoordinate.from_link_key(key)
    return None
