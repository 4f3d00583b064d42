"""What the pull path does with read sources, reduced to bytes: try each source in order,
verify what it served (here: compare with the expected bytes, where the engine checks digests),
discard a source that served wrong bytes and go on to the next. Lets store tests pin the
wrapper side of that protocol without the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from xcomstash.errors import IntegrityError, StoreError
from xcomstash.stores import Store


@dataclass
class Pulled:
    data: bytes
    #: Name of the source that served the verified bytes.
    source: str
    #: Names of sources that served bytes that failed verification (and were discarded).
    discarded: list[str] = field(default_factory=list)
    #: Names of sources that raised a StoreError.
    failed: list[str] = field(default_factory=list)


def pull(store: Store, key: str, expected: bytes) -> Pulled:
    discarded: list[str] = []
    failed: list[str] = []
    last: Exception | None = None
    for source in store.read_sources(key, size_hint=len(expected)):
        try:
            reader = source.open()
        except StoreError as exc:
            failed.append(source.name)
            last = exc
            continue
        if reader is None:
            continue
        try:
            data = reader.read_at(0, reader.size)
        except StoreError as exc:
            failed.append(source.name)
            last = exc
            continue
        finally:
            reader.close()
        if data != expected:
            source.discard()
            discarded.append(source.name)
            last = IntegrityError("served bytes differ from the reference", uri=store.uri_for(key))
            continue
        return Pulled(data, source.name, discarded, failed)
    assert last is not None, "no source held the object"
    raise last
