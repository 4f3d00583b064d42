"""Plain JSON values (no dedicated codec) with the engine's default PLAIN_JSON converter: small
ones stay inline unchanged, large ones are stored as JSON, and both come back equal. Values JSON
would change (tuples, non-string keys, unknown objects) are refused at push time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.codecs.conftest import COORDINATE, row_roundtrip
from xcomstash import Engine, StashConfig, UnsupportedTypeError
from xcomstash.codecs.json import PLAIN_JSON
from xcomstash.format.reference import is_reference

VALUES = [
    pytest.param({"a": 1, "b": [1, 2.5, None, True], "c": {"d": "e"}}, id="nested-dict"),
    pytest.param([1, "two", 3.0, None, False, [], {}], id="mixed-list"),
    pytest.param("ünïcödé – 😀 – \u200f\u05d0 – e\u0301 – \x00 – \\ \" '", id="unicode-string"),
    pytest.param({"ключ": "значение", "😀": ["🙂"], "": ""}, id="unicode-keys"),
    pytest.param(2**63 + 1, id="int-above-int64"),
    pytest.param(-(10**30), id="big-negative-int"),
    pytest.param(1e308, id="float-max"),
    pytest.param(float("inf"), id="inf"),
    pytest.param("", id="empty-string"),
    pytest.param([], id="empty-list"),
    pytest.param({}, id="empty-dict"),
    pytest.param(None, id="none"),
    pytest.param(True, id="true"),
]


@pytest.mark.parametrize("value", VALUES)
def test_value_round_trips_when_stored(roundtrip, value) -> None:
    out = roundtrip(value)
    assert out == value
    assert type(out) is type(value)


@pytest.mark.parametrize("value", VALUES)
def test_small_value_stays_inline_unchanged(store_root: Path, value) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 20))
    stored = engine.serialize(value, COORDINATE)
    assert stored == value and type(stored) is type(value)
    assert not is_reference(stored)
    assert engine.deserialize(stored) == value
    assert not store_root.exists() or not list(store_root.rglob("*.xcs"))


@pytest.mark.parametrize("value", VALUES)
def test_exclusive_mode_stores_even_the_smallest_value(exclusive_engine: Engine, value) -> None:
    out = row_roundtrip(exclusive_engine, value)
    assert out == value and type(out) is type(value)


def test_nan_and_negative_zero_survive_the_store(roundtrip) -> None:
    out = roundtrip({"nan": float("nan"), "negzero": -0.0, "ninf": float("-inf")})
    assert math.isnan(out["nan"])
    assert math.copysign(1.0, out["negzero"]) == -1.0
    assert out["ninf"] == float("-inf")


def test_large_value_round_trips_and_is_summarised(engine: Engine) -> None:
    value = [{"id": i, "name": f"row-{i}-ü", "tags": ["a", "b"], "score": i / 7} for i in range(50_000)]
    stored = engine.serialize(value, COORDINATE)
    assert is_reference(stored)
    assert stored["codec"] == "json"
    assert stored["type"] == "list"
    assert stored["summary"] == "list 50,000 items"
    assert engine.deserialize(stored) == value


@pytest.mark.parametrize(
    ("value", "summary"),
    [({"a": 1, "b": 2}, "dict 2 keys"), ("x" * 1234, "str 1,234 chars"), (7, "int")],
)
def test_stored_json_reference_summary(engine: Engine, value, summary: str) -> None:
    assert engine.serialize(value, COORDINATE)["summary"] == summary


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param((1, 2), "tuple", id="tuple"),
        pytest.param({1: "a"}, "dict", id="int-key"),
        pytest.param({"a": {(1, 2): "b"}}, "dict", id="nested-tuple-key"),
        pytest.param({"a": [1, {2, 3}]}, "dict", id="nested-set"),
        pytest.param({"a", "b"}, "set", id="set"),
        pytest.param(object(), "object", id="object"),
        pytest.param(1 + 2j, "complex", id="complex"),
    ],
)
@pytest.mark.parametrize("threshold", [0, 1 << 20], ids=["stored", "inline"])
def test_values_json_would_change_are_refused_at_push(
    store_root: Path, value, type_name: str, threshold: int
) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=threshold))
    with pytest.raises(UnsupportedTypeError) as info:
        engine.serialize(value, COORDINATE)
    assert info.value.type_name == type_name
    assert "register_codec" in str(info.value)
    assert not store_root.exists() or not list(store_root.rglob("*.xcs"))


def test_deeply_nested_value_is_refused_with_a_typed_error(engine: Engine) -> None:
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(UnsupportedTypeError):
        engine.serialize(value, COORDINATE)


def test_circular_value_is_refused_with_a_typed_error(engine: Engine) -> None:
    value: dict = {"a": []}
    value["a"].append(value)
    with pytest.raises(UnsupportedTypeError):
        engine.serialize(value, COORDINATE)


def test_plain_json_converter_returns_json_values_themselves() -> None:
    value = {"a": [1, 2, {"b": None}]}
    assert PLAIN_JSON.to_structure(value) is value
    assert PLAIN_JSON.from_structure(value) is value
    with pytest.raises(TypeError):
        PLAIN_JSON.to_structure([1, (2, 3)])


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)

@settings(max_examples=50, deadline=None)
@given(value=json_values, threshold=st.integers(min_value=0, max_value=300), exclusive=st.booleans())
def test_any_json_value_round_trips_whatever_the_route(
    module_store_root: Path, value, threshold: int, exclusive: bool
) -> None:
    engine = Engine(
        StashConfig(store_url=f"file://{module_store_root}", threshold=threshold, exclusive=exclusive)
    )
    stored = engine.serialize(value, COORDINATE)
    if exclusive:
        assert is_reference(stored)
    if not is_reference(stored):
        assert stored is value  # inline: the plain structure itself
    out = row_roundtrip(engine, value) if is_reference(stored) else engine.deserialize(stored)
    assert out == value
    assert type(out) is type(value)
