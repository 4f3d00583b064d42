"""What still needs a key: the check ``xcomstash keys remove`` makes before dropping one.

A key is still needed while

- a stored object's key slot names it and really unwraps under it (a slot that names the key
  but does not unwrap is already unreadable: forged or damaged, it does not keep the key), or
- a reference in the xcom table carries a MAC that names it and verifies under it, in the row
  it was written for (a MAC that does not verify, or a genuine reference copied into another
  row, is refused by every reader anyway).

Only the key's own keyset is needed for the check (the slot is bound to the DAG run its object
header names, as the reader binds it), so it runs from the keyset file being edited. It reads
every object's header and key slot (three small ranged reads per object) and the reference rows
of the xcom table; nothing is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xcomstash.coordinate import OBJECT_SUFFIX, XComCoordinate
from xcomstash.errors import InvalidReferenceError, StoreError, XComStashError
from xcomstash.format import container
from xcomstash.format.reference import MARKER
from xcomstash.maintenance.rows import RowFilter, decode_value
from xcomstash.security import signing
from xcomstash.security.crypto.keyset import Keyset
from xcomstash.security.crypto.stream import Envelope, scope_aad, slot_key_id, unwrap
from xcomstash.security.readers import Expected

#: Examples kept per category for the report.
EXAMPLES = 5


@dataclass
class KeyUse:
    """Where one key id is still named, by what kind of thing."""

    key_id: str
    objects: int = 0
    references: int = 0
    #: Slots or MACs naming the key that do not open/verify under it (unreadable anyway).
    unreadable_objects: int = 0
    invalid_references: int = 0
    #: Objects that could not be read at all (store errors): the check is then incomplete.
    unchecked_objects: int = 0
    examples: list[str] = field(default_factory=list)
    objects_checked: bool = False
    references_checked: bool = False

    @property
    def in_use(self) -> bool:
        return bool(self.objects or self.references or self.unchecked_objects)

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "objects": self.objects if self.objects_checked else None,
            "references": self.references if self.references_checked else None,
            "unreadable_objects": self.unreadable_objects,
            "invalid_references": self.invalid_references,
            "unchecked_objects": self.unchecked_objects,
            "examples": self.examples,
        }


def _example(use: KeyUse, text: str) -> None:
    if len(use.examples) < EXAMPLES:
        use.examples.append(text)


def objects_needing(store: Any, keyset: Keyset, key_id: str, use: KeyUse, *, prefix: str = "") -> None:
    """Count the objects under ``prefix`` whose key slot opens only with ``key_id``."""
    use.objects_checked = True
    for info in store.list(prefix):
        if not info.key.endswith(OBJECT_SUFFIX):
            continue
        try:
            reader = store.open_reader(info.key)
        except StoreError:
            if store.head(info.key) is not None:  # deleted meanwhile is fine; unreadable is not
                use.unchecked_objects += 1
                _example(use, f"object {info.key}: unreadable")
            continue
        try:
            layout = container.read_layout(reader.size, reader.read_at)
        except (container.ObjectFormatError, StoreError, OSError):
            use.unreadable_objects += 1
            continue
        finally:
            reader.close()
        if layout.key_slot is None or layout.header.encryption is None:
            continue
        try:
            if slot_key_id(layout.key_slot) != key_id:
                continue
            dag_id, run_id = (str(layout.header.xcom.get(k, "")) for k in ("dag_id", "run_id"))
            envelope = Envelope.from_header(layout.header.encryption)
            unwrap(keyset, layout.key_slot, scope_aad(layout.header_bytes, envelope, dag_id, run_id))
        except XComStashError:
            use.unreadable_objects += 1
            continue
        use.objects += 1
        _example(use, f"object {info.key}")


def references_needing(rows: Any, keyset: Keyset, key_id: str, use: KeyUse) -> None:
    """Count the references whose MAC verifies only with ``key_id``."""
    use.references_checked = True
    for row in rows.iter_rows(RowFilter(references_only=True)):
        doc = decode_value(row.value)
        if not isinstance(doc, dict) or MARKER not in doc or "mac" not in doc:
            continue
        try:
            if signing.mac_key_id(doc["mac"]) != key_id:
                continue
            signing.verify(keyset, doc)
            check_written_for(doc, row.coordinate)
        except XComStashError:
            use.invalid_references += 1
            continue
        use.references += 1
        _example(use, f"reference in the row of {row.coordinate}")


def check_written_for(doc: dict[str, Any], coordinate: XComCoordinate) -> None:
    """The reference names the XCom of the row it is in (the check every reader makes):
    ``ReferenceSignatureError`` for a genuine reference copied into another row."""
    if "xcom" not in doc:
        return  # written before references named their XCom: readers accept it too
    written_for = XComCoordinate.from_dict(doc["xcom"])
    if written_for is None:
        raise InvalidReferenceError("malformed xcomstash reference: bad xcom")
    Expected(**coordinate.as_dict()).check(written_for, "the reference")
