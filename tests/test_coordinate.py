"""XCom coordinates and their object keys: deterministic, unique per coordinate, safe as paths,
within S3's key length, and mapping back to the coordinate unless a part had to be shortened."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.coordinate import (
    MAX_KEY_BYTES,
    OBJECT_SUFFIX,
    dag_prefix,
    decode_component,
    encode_component,
    is_blob_key,
    is_object_key,
    parse_blob_key,
    parse_link_key,
    run_links_prefix,
)
from xcomstash.format.keyspace import KeyKind, classify, xcom_of_key
from xcomstash.stores import LocalStore

BASE = dict(dag_id="dag", run_id="run", task_id="task", map_index=-1, key="return_value")


def coord(**fields) -> XComCoordinate:
    return XComCoordinate(**{**BASE, **fields})


def assert_safe_key(key: str) -> None:
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert key.endswith(OBJECT_SUFFIX)
    parts = key.split("/")
    assert len(parts) == 5
    for part in parts:
        assert part not in ("", ".", "..")
        assert "\\" not in part and "\x00" not in part
    assert key.isascii() and key.isprintable()


def test_plain_coordinate_gives_a_readable_key() -> None:
    c = XComCoordinate("etl", "manual__2026-11-23T10:00:00+00:00", "extract", 4, "return_value")
    assert c.object_key() == "etl/manual__2026-11-23T10:00:00+00:00/extract/4/return_value.xcs"


def test_key_is_deterministic() -> None:
    c = coord(key="k")
    assert c.object_key() == coord(key="k").object_key()


AWKWARD = {
    "unicode": "ünïcødé-😀",
    "slash": "a/b",
    "lone slash": "/",
    "absolute path": "/etc/passwd",
    "dotdot": "..",
    "dot": ".",
    "three dots": "...",
    "traversal": "../../x",
    "backslash": "a\\b",
    "nul": "\x00",
    "empty": "",
    "space": " ",
    "encoded dots": "%2E%2E",
    "bang": "!",
    "url syntax": "?#&",
    "control chars": "line\nbreak\t",
    "5000 ascii": "x" * 5000,
    "1500 two-byte": "é" * 1500,
    "1200 emoji": "😀" * 1200,
}


@pytest.mark.parametrize("text", AWKWARD.values(), ids=AWKWARD.keys())
@pytest.mark.parametrize("field", ["dag_id", "run_id", "task_id", "key"])
def test_awkward_ids_give_safe_bounded_keys(field: str, text: str) -> None:
    c = coord(**{field: text})
    key = c.object_key()
    assert_safe_key(key)
    part = key[: -len(OBJECT_SUFFIX)].split("/")[["dag_id", "run_id", "task_id", "map_index", "key"].index(field)]
    if len(text) > 1000:
        assert "!" in part  # shortened, with a hash of the whole id
        assert XComCoordinate.from_object_key(key) is None
    else:
        assert XComCoordinate.from_object_key(key) == c


def test_all_four_ids_over_1000_characters_stay_within_900_bytes() -> None:
    c = XComCoordinate("d" * 1200, "r" * 1300, "t" * 1400, 2**31 - 1, "😀" * 1100)
    key = c.object_key()
    assert_safe_key(key)
    assert XComCoordinate.from_object_key(key) is None  # shortened: the header has the full ids


def test_long_ids_sharing_a_prefix_still_get_different_keys() -> None:
    prefix = "p" * 2000
    assert coord(run_id=prefix + "a").object_key() != coord(run_id=prefix + "b").object_key()


@pytest.mark.parametrize(
    ("a", "b"),
    [("", "\x00"), (".", "%2E"), ("..", "%2E%2E"), ("a/b", "a%2Fb"), ("%", "%25"), ("", "%")],
    ids=repr,
)
def test_ids_that_could_encode_alike_get_different_keys(a: str, b: str) -> None:
    ka, kb = coord(key=a).object_key(), coord(key=b).object_key()
    assert ka != kb
    assert XComCoordinate.from_object_key(ka) == coord(key=a)
    assert XComCoordinate.from_object_key(kb) == coord(key=b)


@pytest.mark.parametrize("map_index", [-1, 0, 7, 2**31 - 1])
def test_map_index_is_part_of_the_key_and_maps_back(map_index: int) -> None:
    c = coord(map_index=map_index)
    assert c.object_key().split("/")[3] == str(map_index)
    assert XComCoordinate.from_object_key(c.object_key()) == c


@pytest.mark.parametrize(
    "key",
    ["dag/run/task/-1/key.txt", "dag/run/task/key.xcs", "a/dag/run/task/-1/key.xcs", "dag/run/task/x/key.xcs", ""],
)
def test_foreign_keys_do_not_map_to_a_coordinate(key: str) -> None:
    assert XComCoordinate.from_object_key(key) is None


@pytest.mark.parametrize("dedup", [True, False], ids=["blobs", "per-xcom"])
def test_awkward_coordinate_is_stored_inside_the_store_root(tmp_path: Path, dedup: bool) -> None:
    root = tmp_path / "store"
    engine = Engine(StashConfig(store_url=f"file://{root}", threshold=0, dedup=dedup))
    c = XComCoordinate("../../escape", "/abs", "..", -1, "a/../../b")
    stored = engine.serialize(b"data", c)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == (2 if dedup else 1)  # the blob and its link, or the one object
    assert all(p.resolve().is_relative_to(root.resolve()) for p in written)
    assert engine.deserialize(stored) == b"data"
    expected = c.blob_key(stored["digest"]) if dedup else c.object_key()
    assert engine.store.key_for(stored["uri"]) == expected


def test_blob_and_link_keys_parse_back() -> None:
    c = XComCoordinate("d/x", "r", "t.1", 4, "k y")
    digest = "sha256:" + "ab" * 32
    blob = parse_blob_key(c.blob_key(digest))
    link = parse_link_key(c.link_key(digest))
    assert blob is not None and link is not None
    assert blob.hex_digest == link.hex_digest == "ab" * 32
    assert link.blob_key == c.blob_key(digest)
    assert (link.task_id, link.map_index, link.key) == ("t.1", 4, "k y")
    assert c.link_key(digest).startswith(blob.links_root)
    assert parse_blob_key(c.object_key()) is None and parse_link_key(c.object_key()) is None


@pytest.mark.parametrize(
    "key",
    ["d/r/.blobs/abc.xcs", "d/r/.blobs/" + "g" * 64 + ".xcs", "d/r/x/.blobs/" + "a" * 64 + ".xcs", ""],
)
def test_malformed_blob_keys_do_not_parse(key: str) -> None:
    assert parse_blob_key(key) is None


def test_str_names_every_field() -> None:
    text = str(XComCoordinate("d", "r", "t", 2, "k"))
    assert text == "dag_id='d' run_id='r' task_id='t' map_index=2 key='k'"


# --------------------------------------------------------------------------- properties

ids = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="./%!\\\x00 é😀", max_size=6),
    st.text(min_size=150, max_size=400),
)
coordinates = st.builds(
    XComCoordinate,
    dag_id=ids,
    run_id=ids,
    task_id=ids,
    map_index=st.integers(min_value=-1, max_value=2**31 - 1),
    key=ids,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(coordinates, min_size=2, max_size=8, unique=True))
def test_different_coordinates_get_different_keys(cs: list[XComCoordinate]) -> None:
    keys = [c.object_key() for c in cs]
    assert len(set(keys)) == len(cs)


@settings(max_examples=50, deadline=None)
@given(coordinates)
def test_every_key_is_safe_and_maps_back_unless_shortened(c: XComCoordinate) -> None:
    key = c.object_key()
    assert_safe_key(key)
    back = XComCoordinate.from_object_key(key)
    shortened = any("!" in part for part in key.split("/"))
    assert back == (None if shortened else c)


@settings(max_examples=50, deadline=None)
@given(coordinates)
def test_every_key_is_accepted_by_the_local_store(c: XComCoordinate) -> None:
    store = LocalStore("/tmp/xcomstash-unused-root")
    key = c.object_key()
    assert store.key_for(store.uri_for(key)) == key


# --------------------------------------------------------------------------- one layout


def test_every_key_of_an_xcom_is_built_from_its_encoded_components() -> None:
    c = XComCoordinate("d/x", "run 1", "t", 3, "k")
    dag, run, task, key = (encode_component(p) for p in (c.dag_id, c.run_id, c.task_id, c.key))
    digest = "sha256:" + "ab" * 32
    assert c.run_prefix() == f"{dag}/{run}" and dag_prefix(c.dag_id) == f"{dag}/"
    assert c.object_key() == f"{dag}/{run}/{task}/3/{key}.xcs"
    assert c.blob_key(digest) == f"{dag}/{run}/.blobs/{'ab' * 32}.xcs"
    assert c.link_key(digest) == f"{run_links_prefix(c.run_prefix())}{task}/3/{key}/{'ab' * 32}"


def test_run_links_prefix_holds_every_link_of_the_run_and_no_other_key() -> None:
    c = coord()
    digest = "sha256:" + "cd" * 32
    prefix = run_links_prefix(c.run_prefix())
    assert c.link_key(digest).startswith(prefix) and c.links_prefix().startswith(prefix)
    assert parse_blob_key(c.blob_key(digest)).links_root == prefix  # type: ignore[union-attr]
    assert not c.blob_key(digest).startswith(prefix) and not c.object_key().startswith(prefix)
    assert not coord(run_id="other").link_key(digest).startswith(prefix)


def test_a_task_named_like_the_links_folder_does_not_make_an_object_a_link() -> None:
    c = coord(task_id=".links")
    assert is_object_key(c.object_key()) and parse_link_key(c.object_key()) is None
    assert classify(c.object_key()) is KeyKind.OBJECT


def test_from_link_key_names_the_xcom_unless_a_component_was_shortened() -> None:
    digest = "sha256:" + "ef" * 32
    c = XComCoordinate("d/x", "%", "", 7, "k y")
    assert XComCoordinate.from_link_key(c.link_key(digest)) == c == xcom_of_key(c.link_key(digest))
    long = coord(key="k" * 300)
    assert XComCoordinate.from_link_key(long.link_key(digest)) is None
    assert XComCoordinate.from_link_key(c.object_key()) is None


def test_blob_and_object_shapes_are_told_apart() -> None:
    c = coord()
    digest = "sha256:" + "01" * 32
    assert is_blob_key(c.blob_key(digest)) and not is_blob_key(c.object_key())
    assert not is_blob_key(c.link_key(digest))
    assert is_object_key(c.object_key()) and not is_object_key(c.blob_key(digest))
    assert is_object_key(coord(key="k" * 300).object_key())  # shortened: still an object key


@settings(max_examples=50, deadline=None)
@given(ids)
def test_decode_component_inverts_encode_component_unless_shortened(text: str) -> None:
    encoded = encode_component(text)
    assert decode_component(encoded) == (None if "!" in encoded else text)
