"""Fuzzing the parsers that read untrusted bytes: the reference in an xcom row (anyone who can
write the xcom table controls it), the object layout and header (anyone who can write the
bucket controls them), and the security parsers (key slots, encryption blocks, keysets, MACs,
DAG policies). Each must return a result or raise its typed error: never another exception,
never hang (hypothesis' deadline), never allocate by a length field it has not checked
(the inputs are small, and a reader over them refuses reads past their end)."""

from __future__ import annotations

import json
import struct
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.security import signing
from xcomstash.security.crypto.keyset import Keyset
from xcomstash.security.crypto.stream import KEY_SLOT_BYTES, Envelope, KeySlot
from xcomstash.errors import ConfigError, XComStashError
from xcomstash.format.container import MAGIC, ObjectFormatError, parse_header, read_layout
from xcomstash.format.reference import MARKER, Reference
from xcomstash.security.rules import parse_dag_policies

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=60),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=25,
)


def valid_reference() -> dict[str, Any]:
    return {
        MARKER: 1,
        "summary": "dict 3 keys",
        "type": "dict",
        "codec": "json",
        "size": 123,
        "uri": "file:///store/d/r/.blobs/" + "a" * 64 + ".xcs",
        "digest": "sha256:" + "b" * 64,
        "xcom": {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "key": "return_value"},
    }


def only_typed(call: Callable[[], Any], errors: tuple[type[BaseException], ...] = (XComStashError,)) -> Any:
    try:
        return call()
    except errors:
        return None


@FUZZ
@given(json_values)
def test_reference_parser_on_arbitrary_json(value: Any) -> None:
    only_typed(lambda: Reference.from_json(value))
    if isinstance(value, dict):
        only_typed(lambda: Reference.from_json({**value, MARKER: 1}))


@FUZZ
@given(st.sampled_from(sorted(valid_reference())), json_values)
def test_reference_parser_on_one_field_replaced(field: str, replacement: Any) -> None:
    doc = valid_reference()
    doc[field] = replacement
    ref = only_typed(lambda: Reference.from_json(doc))
    if ref is not None:  # whatever was accepted is well typed
        assert isinstance(ref.uri, str) and isinstance(ref.size, int) and ref.size >= 0
        assert ref.digest.startswith("sha256:") and len(ref.digest) == 71


@FUZZ
@given(st.text(max_size=400))
def test_reference_parser_on_arbitrary_row_text(text: str) -> None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return
    only_typed(lambda: Reference.from_json(value))


def test_reference_parser_on_deep_nesting_and_huge_values() -> None:
    deep: Any = {}
    for _ in range(5000):
        deep = {"a": deep}
    for doc in ({**valid_reference(), "xcom": deep}, {**valid_reference(), "uri": "x" * 10**7},
                {**valid_reference(), "size": 10**400}, {**valid_reference(), "summary": "s" * 10**6}):
        only_typed(lambda: Reference.from_json(doc))


@FUZZ
@given(st.binary(max_size=600))
def test_header_parser_on_arbitrary_bytes(blob: bytes) -> None:
    only_typed(lambda: parse_header(blob), (ObjectFormatError,))


@FUZZ
@given(json_values)
def test_header_parser_on_arbitrary_json(value: Any) -> None:
    blob = json.dumps(value).encode()
    only_typed(lambda: parse_header(blob), (ObjectFormatError,))
    if isinstance(value, dict):
        doc = {"format": 1, "codec": "json", "compression": "none", "python_type": "dict", **value}
        only_typed(lambda: parse_header(json.dumps(doc).encode()), (ObjectFormatError,))


def test_header_parser_on_deep_nesting() -> None:
    only_typed(lambda: parse_header(b"[" * 100_000 + b"]" * 100_000), (ObjectFormatError,))


def _reader(data: bytes) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        assert 0 <= offset and length >= 0 and offset + length <= len(data) + 8, (offset, length, len(data))
        return data[offset : offset + length]

    return read_at


@pytest.fixture(scope="module")
def stored_object(tmp_path_factory) -> bytes:
    root = tmp_path_factory.mktemp("fuzz-store")
    engine = Engine(StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False, dedup=False)
                    if "dedup" in StashConfig.__dataclass_fields__ else StashConfig(store_url=f"file://{root}", threshold=0, read_ahead=False))
    ref = Reference.from_json(engine.serialize({"a": list(range(50))}, XComCoordinate("d", "r", "t", -1, "k")))
    return engine.store.get(engine.store.key_for(ref.uri))


@FUZZ
@given(st.binary(max_size=400))
def test_layout_parser_on_arbitrary_bytes(blob: bytes) -> None:
    only_typed(lambda: read_layout(len(blob), _reader(blob)), (ObjectFormatError,))
    with_magic = MAGIC + blob
    only_typed(lambda: read_layout(len(with_magic), _reader(with_magic)), (ObjectFormatError,))


@FUZZ
@given(st.data())
def test_layout_parser_on_mutated_objects(stored_object: bytes, data: st.DataObject) -> None:
    blob = bytearray(stored_object)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if kind == "flip" and blob:
            blob[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and len(blob) >= at + 4:
            blob[at : at + 4] = struct.pack("<I", data.draw(st.sampled_from([0, 1, 2**31, 2**32 - 1])))
        elif kind == "cut":
            del blob[at : at + data.draw(st.integers(1, 64))]
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    raw = bytes(blob)
    only_typed(lambda: read_layout(len(raw), _reader(raw)), (ObjectFormatError,))


@FUZZ
@given(st.binary(min_size=KEY_SLOT_BYTES, max_size=KEY_SLOT_BYTES))
def test_key_slot_parser(blob: bytes) -> None:
    only_typed(lambda: KeySlot.parse(blob))
    only_typed(lambda: KeySlot.parse(b"XKS1" + blob[4:]))


@FUZZ
@given(json_values)
def test_encryption_block_parser(value: Any) -> None:
    only_typed(lambda: Envelope.from_header(value))
    if isinstance(value, dict):
        only_typed(lambda: Envelope.from_header({**Envelope.new().to_header(), **value}))


@FUZZ
@given(json_values)
def test_keyset_and_policy_parsers(value: Any) -> None:
    text = json.dumps(value)
    only_typed(lambda: Keyset.from_json(text), (ConfigError,))
    only_typed(lambda: Keyset.from_json(json.dumps({"xcomstash_keyset": 1, "primary": "a", "keys": value})), (ConfigError,))
    only_typed(lambda: parse_dag_policies(text), (ConfigError,))


KEYSET = Keyset.generate()


@FUZZ
@given(json_values)
def test_mac_verification_on_arbitrary_macs(value: Any) -> None:
    doc = {**valid_reference(), "mac": value}
    only_typed(lambda: signing.verify(KEYSET, doc))
    assert only_typed(lambda: signing.verify(KEYSET, doc)) is None  # nothing random ever verifies
