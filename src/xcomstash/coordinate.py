"""Where an XCom lives in Airflow's terms, and the keys it maps to in a store.

Two layouts, both under ``<dag>/<run>/`` so everything of one DAG run sits together:

- **shared blobs** (the default, ``dedup``): the object is ``.blobs/<digest>.xcs``, named by its
  root digest, so identical payloads pushed in one run are stored once; each XCom that
  references it leaves a **link** ``.links/<task>/<map_index>/<key>/<digest>`` whose body is the
  blob's key. Links say, from the store alone, which XComs keep a blob alive (purge and
  reconcile use them), and let read-ahead find the next mapped output's blob. A blob streamed
  to S3 in several parts is kept where it was uploaded, ``.blobs/s-<random>.xcs`` (S3 cannot
  rename, and a copy would cost as much as the upload); its links still carry the digest.
- **per XCom** (``dedup = False``, and everything written before dedup existed):
  ``<task>/<map_index>/<key>.xcs``, deterministic, so a retry overwrites its previous object.

Every component is percent-encoded (see :func:`encode_component`).

This module is the one place that knows what a key looks like: every other module (purge,
reconcile, the key classification in :mod:`xcomstash.format.keyspace`, the CLI) builds and
parses keys through the functions here, so the layout cannot drift between writer and collector.
"""

from __future__ import annotations

import functools
import hashlib
import re
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
BLOBS = ".blobs"
LINKS = ".links"
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_STREAM_TOKEN = re.compile(r"[0-9a-f]{16,64}")
#: Prefix of a blob kept where it was streamed (see the module docstring).
STREAMED_PREFIX = "s-"


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
        key = f"{self.run_prefix()}/{self._xcom_path()}{OBJECT_SUFFIX}"
        assert len(key.encode()) <= MAX_KEY_BYTES
        return key

    def run_prefix(self) -> str:
        """``<dag>/<run>``: the part of every key that names this XCom's DAG run."""
        return dag_prefix(self.dag_id) + encode_component(self.run_id)

    def blob_key(self, digest: str) -> str:
        """The content-addressed object for ``digest`` (``blake3:<hex>``) in this XCom's run."""
        return f"{self.run_prefix()}/{BLOBS}/{hex_of(digest)}{OBJECT_SUFFIX}"

    def links_prefix(self) -> str:
        """Where this XCom's links live: ``<dag>/<run>/.links/<task>/<map_index>/<key>``."""
        return run_links_prefix(self.run_prefix()) + self._xcom_path()

    def _xcom_path(self) -> str:
        """``<task>/<map_index>/<key>``: what names the XCom within its run, in both layouts
        (the per-XCom object's path, the folder of its links)."""
        return f"{encode_component(self.task_id)}/{int(self.map_index)}/{encode_component(self.key)}"

    def link_key(self, digest: str) -> str:
        """The marker saying this XCom references the blob ``digest``."""
        return f"{self.links_prefix()}/{hex_of(digest)}"

    @classmethod
    def from_dict(cls, doc: object) -> XComCoordinate | None:
        """The inverse of :meth:`as_dict`; ``None`` if ``doc`` is not such a dict."""
        if not isinstance(doc, dict):
            return None
        try:
            coordinate = cls(
                dag_id=doc["dag_id"],
                run_id=doc["run_id"],
                task_id=doc["task_id"],
                map_index=doc["map_index"],
                key=doc["key"],
            )
        except (KeyError, TypeError):
            return None
        if not all(isinstance(v, str) for v in (coordinate.dag_id, coordinate.run_id, coordinate.task_id, coordinate.key)):
            return None
        if not isinstance(coordinate.map_index, int) or isinstance(coordinate.map_index, bool):
            return None
        return coordinate

    @classmethod
    def from_object_key(cls, key: str) -> XComCoordinate | None:
        """Map a store key back to its coordinate; ``None`` if the key was shortened or is not ours."""
        parts = _object_parts(key)
        return None if parts is None else cls._from_parts(parts)

    @classmethod
    def from_link_key(cls, key: str) -> XComCoordinate | None:
        """The XCom a link belongs to; ``None`` if the key is no link or a component was shortened."""
        if parse_link_key(key) is None:
            return None
        parts = key.split("/")
        return cls._from_parts([parts[0], parts[1], parts[3], parts[4], parts[5]])

    @classmethod
    def _from_parts(cls, parts: list[str]) -> XComCoordinate | None:
        """The coordinate of a key's ``dag, run, task, map_index, key`` components (the map
        index already checked by the parser that split them); ``None`` if one was shortened."""
        dag_id, run_id, task_id, xkey = (decode_component(parts[i]) for i in (0, 1, 2, 4))
        if dag_id is None or run_id is None or task_id is None or xkey is None:
            return None
        return cls(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=int(parts[3]), key=xkey)


@functools.lru_cache(maxsize=1 << 16)
def encode_component(text: str) -> str:
    """One key component (DAG, run, task or XCom key) as it appears in a store key.

    Cached because maintenance builds keys for a million rows that share a few thousand
    names (reconcile names every row's link).
    """
    encoded = quote(text, safe="-_.+=:@,") or _EMPTY
    # A lone "." or ".." would be a path step on a filesystem store.
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    if len(encoded) <= _COMPONENT_BUDGET:
        return encoded
    digest = hashlib.sha256(text.encode()).hexdigest()[:24]
    return f"{encoded[:_COMPONENT_BUDGET - 26]}!{digest}"


def decode_component(component: str) -> str | None:
    """The inverse of :func:`encode_component`; ``None`` for a shortened component (its
    original cannot be recovered from the key)."""
    if "!" in component:
        return None
    return _unquote(component)


def _unquote(component: str) -> str:
    return "" if component == _EMPTY else unquote(component)


def dag_prefix(dag_id: str) -> str:
    """``<dag>/``: the key prefix of everything stored for one DAG."""
    return f"{encode_component(dag_id)}/"


def run_links_prefix(run_prefix: str) -> str:
    """``<dag>/<run>/.links/``: the key prefix of every link of one DAG run (``run_prefix`` as
    :meth:`XComCoordinate.run_prefix` gives it), what purge and reconcile list to see which
    blobs are still in use."""
    return f"{run_prefix}/{LINKS}/"


def hex_of(digest: str) -> str:
    """``<hash>:<hex>`` -> ``<hex>`` (the form used in key names)."""
    return digest.split(":", 1)[1] if ":" in digest else digest


def _is_hex_digest(text: str) -> bool:
    return _HEX_DIGEST.fullmatch(text) is not None


@dataclass(frozen=True)
class BlobKey:
    """A parsed ``<dag>/<run>/.blobs/<hex>.xcs`` (or ``.blobs/s-<random>.xcs``) key."""

    run_prefix: str
    #: The digest the name carries; ``None`` for a blob kept where it was streamed.
    hex_digest: str | None

    @property
    def links_root(self) -> str:
        """The prefix under which every link of this blob's run lives."""
        return run_links_prefix(self.run_prefix)


@dataclass(frozen=True)
class LinkKey:
    """A parsed ``<dag>/<run>/.links/<task>/<map_index>/<key>/<hex>`` key."""

    run_prefix: str
    task_id: str
    map_index: int
    key: str
    hex_digest: str

    @property
    def blob_key(self) -> str:
        """The blob named by the digest (a streamed blob's key is in the link's body)."""
        return f"{self.run_prefix}/{BLOBS}/{self.hex_digest}{OBJECT_SUFFIX}"


def streamed_blob_key(run_prefix: str, token: str) -> str:
    return f"{run_prefix}/{BLOBS}/{STREAMED_PREFIX}{token}{OBJECT_SUFFIX}"


def _object_parts(key: str) -> list[str] | None:
    """The five components of a per-XCom object key (still encoded), or ``None``."""
    if not key.endswith(OBJECT_SUFFIX):
        return None
    parts = key[: -len(OBJECT_SUFFIX)].split("/")
    if len(parts) != 5:
        return None
    try:
        int(parts[3])
    except ValueError:
        return None
    return parts


def is_object_key(key: str) -> bool:
    """Whether ``key`` has the per-XCom layout (also when a component was shortened)."""
    return _object_parts(key) is not None


def _blob_parts(key: str) -> list[str] | None:
    parts = key.split("/")
    if len(parts) != 4 or parts[2] != BLOBS or not parts[3].endswith(OBJECT_SUFFIX):
        return None
    return parts


def is_blob_key(key: str) -> bool:
    """Whether ``key`` lies where blobs live (``<dag>/<run>/.blobs/*.xcs``), without checking
    the name: cheap enough for every row of a reconcile (:func:`parse_blob_key` validates)."""
    return _blob_parts(key) is not None


def parse_blob_key(key: str) -> BlobKey | None:
    parts = _blob_parts(key)
    if parts is None:
        return None
    name = parts[3][: -len(OBJECT_SUFFIX)]
    run_prefix = f"{parts[0]}/{parts[1]}"
    if _is_hex_digest(name):
        return BlobKey(run_prefix=run_prefix, hex_digest=name)
    if name.startswith(STREAMED_PREFIX) and _STREAM_TOKEN.fullmatch(name[len(STREAMED_PREFIX) :]):
        return BlobKey(run_prefix=run_prefix, hex_digest=None)
    return None


def parse_link_key(key: str) -> LinkKey | None:
    """Task and key come back decoded (``None``-safe only for unshortened components)."""
    parts = key.split("/")
    if len(parts) != 7 or parts[2] != LINKS or not _is_hex_digest(parts[6]):
        return None
    try:
        map_index = int(parts[4])
    except ValueError:
        return None
    task_id, xkey = _unquote(parts[3]), _unquote(parts[5])
    return LinkKey(
        run_prefix=f"{parts[0]}/{parts[1]}",
        task_id=task_id,
        map_index=map_index,
        key=xkey,
        hex_digest=parts[6],
    )
