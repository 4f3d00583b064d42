"""The reference in the xcom row: built and parsed losslessly, and any deviation from the
format (malformed JSON object, other version, wrong types, unknown fields) is an
InvalidReferenceError, never another exception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcomstash import Engine, InvalidReferenceError, StashConfig, XComCoordinate, XComStashError
from xcomstash.format.reference import (
    FORMAT_VERSION,
    MARKER,
    MAX_SUMMARY_CHARS,
    MAX_URI_CHARS,
    Reference,
    clip_summary,
    is_reference,
)

VALID = {
    MARKER: 1,
    "summary": "DataFrame 1,000 rows x 9 cols",
    "type": "pandas.DataFrame",
    "codec": "pandas.arrow-ipc",
    "size": 12345,
    "uri": "file:///data/xcom/dag/run/task/-1/return_value.xcs",
    "digest": "sha256:" + "ab" * 32,
}


@pytest.mark.parametrize("digest", ["sha256:" + "ab" * 32, "blake3:" + "cd" * 32])
def test_reference_round_trips_through_json_with_either_hash(digest: str) -> None:
    ref = Reference.from_json({**VALID, "digest": digest})
    assert ref == Reference(
        uri=VALID["uri"],
        size=12345,
        digest=digest,
        codec="pandas.arrow-ipc",
        python_type="pandas.DataFrame",
        summary="DataFrame 1,000 rows x 9 cols",
    )
    row = json.loads(json.dumps(ref.to_json()))
    assert row == {**VALID, "digest": digest}
    assert Reference.from_json(row) == ref


def test_marker_comes_first_and_carries_the_version() -> None:
    row = Reference.from_json(VALID).to_json()
    assert next(iter(row)) == MARKER
    assert row[MARKER] == FORMAT_VERSION == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(VALID, True), ({MARKER: "anything"}, True), ({"a": 1}, False), ([MARKER], False), (MARKER, False), (None, False)],
    ids=["valid", "marker-only", "plain-dict", "list", "string", "none"],
)
def test_is_reference_looks_only_for_the_marker_key(value, expected: bool) -> None:
    assert is_reference(value) is expected


def test_summary_is_clipped_for_the_ui() -> None:
    assert clip_summary("short") == "short"
    clipped = clip_summary("x" * 500)
    assert len(clipped) == MAX_SUMMARY_CHARS and clipped.endswith("…")


def edited(**changes) -> dict:
    row = dict(VALID)
    for key, value in changes.items():
        if value is DROP:
            row.pop(key)
        else:
            row[key] = value
    return row


DROP = object()

MALFORMED = {
    "not a dict: list": [VALID],
    "not a dict: string": json.dumps(VALID),
    "not a dict: none": None,
    "no marker": {k: v for k, v in VALID.items() if k != MARKER},
    "version 0": edited(**{MARKER: 0}),
    "version 2": edited(**{MARKER: 2}),
    "version as string": edited(**{MARKER: "1"}),
    "version true": edited(**{MARKER: True}),
    "version null": edited(**{MARKER: None}),
    "unknown field": edited(extra="x"),
    "missing uri": edited(uri=DROP),
    "missing size": edited(size=DROP),
    "missing digest": edited(digest=DROP),
    "missing codec": edited(codec=DROP),
    "missing type": edited(type=DROP),
    "missing summary": edited(summary=DROP),
    "uri not a string": edited(uri=123),
    "uri empty": edited(uri=""),
    "uri too long": edited(uri="file:///" + "a" * MAX_URI_CHARS),
    "size string": edited(size="12345"),
    "size float": edited(size=12345.0),
    "size bool": edited(size=True),
    "size negative": edited(size=-1),
    "size null": edited(size=None),
    "digest md5": edited(digest="md5:" + "ab" * 16),
    "digest of an unknown 256-bit hash": edited(digest="sha3:" + "ab" * 32),
    "digest blake3 short": edited(digest="blake3:" + "ab" * 31),
    "digest uppercase": edited(digest="sha256:" + "AB" * 32),
    "digest short": edited(digest="sha256:" + "ab" * 31),
    "digest bare hex": edited(digest="ab" * 32),
    "digest not a string": edited(digest=None),
    "codec not a string": edited(codec=["pandas"]),
    "type not a string": edited(type=1),
    "summary not a string": edited(summary={"text": "x"}),
    "codec too long": edited(codec="c" * 201),
}


@pytest.mark.parametrize("row", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_reference_raises_invalid_reference_error(row) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Reference.from_json(row)
    assert isinstance(info.value, ValueError) and isinstance(info.value, XComStashError)


def test_future_version_error_says_which_version_this_worker_reads() -> None:
    with pytest.raises(InvalidReferenceError, match="version 2.*reads version 1"):
        Reference.from_json(edited(**{MARKER: 2}))


# --------------------------------------------------------------------------- fuzz

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.just("sha256:" + "0" * 64),
    st.just("blake3:" + "0" * 64),
    st.sampled_from(["file:///data/x.xcs", "s3://b/k.xcs", "", "file:///../x"]),
    st.integers(min_value=-5, max_value=10**20),
)
reference_like = st.dictionaries(
    st.sampled_from([MARKER, "uri", "size", "digest", "codec", "type", "summary", "extra"]) | st.text(max_size=6),
    field_values,
    max_size=9,
)
mutated_valid = st.builds(
    lambda key, value, drop: {k: v for k, v in {**VALID, key: value}.items() if k != drop},
    st.sampled_from(sorted(VALID)),
    field_values,
    st.sampled_from([None, *sorted(VALID)]),
)


@settings(max_examples=50, deadline=None)
@given(st.one_of(json_values, reference_like, mutated_valid))
def test_parsing_arbitrary_json_raises_only_invalid_reference_error(obj) -> None:
    try:
        ref = Reference.from_json(obj)
    except InvalidReferenceError:
        return
    assert isinstance(ref, Reference)
    assert Reference.from_json(ref.to_json()) == ref


@pytest.fixture(scope="module")
def fuzz_engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    root: Path = tmp_path_factory.mktemp("reference-fuzz")
    engine = Engine(StashConfig(store_url=f"file://{root}", threshold=0))
    coordinate = XComCoordinate("d", "r", "t", -1, "k")
    engine.serialize(b"real object", coordinate)  # something for forged references to find
    return engine


@settings(max_examples=50, deadline=None)
@given(st.one_of(reference_like, mutated_valid), st.booleans())
def test_engine_reading_a_forged_row_raises_only_xcomstash_errors(fuzz_engine: Engine, row, in_store: bool) -> None:
    if in_store and isinstance(row.get("uri"), str):
        row = {**row, "uri": f"{fuzz_engine.store.root_uri}/d/r/t/-1/k.xcs"}
    try:
        fuzz_engine.deserialize(row)
    except XComStashError:
        pass
