"""The small-value fast path: which values go into the row as they are, without conversion."""

from __future__ import annotations

import pytest

from xcomstash.codecs.json import JsonCodec
from xcomstash.format.reference import MARKER
from xcomstash.pipeline.route import inline_as_is

THRESHOLD = 64 * 1024


@pytest.mark.parametrize(
    "value",
    [
        0, -(2**63), 2**64 - 1, 1.5e-308, True, None, "", "text", "é" * 100,
        {"id": 1, "name": "record", "score": 3.25, "ok": False, "tags": ["a", "b"], "none": None},
        [[1, 2], {"nested": [{"deep": "x"}]}], {}, [],
    ],
)
def test_plain_small_values_go_inline_as_they_are(value: object) -> None:
    assert inline_as_is(value, THRESHOLD)


@pytest.mark.parametrize(
    "value",
    [
        (1, 2), {1: "int key"}, {"t": (1,)}, [{1, 2}], 2**64, [2**70], b"bytes", 1j,
        {MARKER: "looks like a reference"}, [{"x": {MARKER: 1}}],
        type("MyInt", (int,), {})(3),
        {"sub": type("MyStr", (str,), {})("s")},
    ],
)
def test_anything_a_converter_might_change_takes_the_measured_path(value: object) -> None:
    assert not inline_as_is(value, THRESHOLD)


def test_a_dict_holding_a_reserved_key_takes_the_measured_path() -> None:
    assert inline_as_is({"__classname__": "x"}, THRESHOLD)
    assert not inline_as_is({"a": [{"__classname__": "x"}]}, THRESHOLD, frozenset({"__classname__"}))


def test_the_bound_is_never_below_the_real_json_size() -> None:
    """Near the threshold the bound says no; whenever it says yes, the JSON text is smaller."""
    worst = "\x00\u20ac\U0001f600"  # 6-byte escape, 3-byte and 4-byte UTF-8 characters
    for n in range(0, 400, 7):
        for value in ([worst * n, -(2**63), -1.2345678901234567e-308, False, None], {worst * n: {"k": [worst] * n}}):
            size = len(JsonCodec.dumps(value))
            for threshold in (size, size + 1):
                if inline_as_is(value, threshold):
                    assert size < threshold, (n, threshold)


def test_deep_nesting_takes_the_measured_path() -> None:
    value: list = []
    for _ in range(150):
        value = [value]
    assert not inline_as_is(value, THRESHOLD)


def test_a_cycle_ends_at_the_threshold_instead_of_looping() -> None:
    cyclic: list = [1]
    cyclic.append(cyclic)
    assert not inline_as_is(cyclic, THRESHOLD)
    loop: dict = {}
    loop["self"] = loop
    assert not inline_as_is(loop, THRESHOLD)


def test_a_zero_threshold_sends_everything_to_the_store() -> None:
    assert not inline_as_is({}, 0)
    assert not inline_as_is(0, 0)
