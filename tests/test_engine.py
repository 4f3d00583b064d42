"""The engine without Airflow, on a real LocalStore: routing, references, deterministic object
keys, purge, the self-describing object, and faults. A fault always raises a typed error that
says which XCom and which object; it never returns a value."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xcomstash import (
    Engine,
    IntegrityError,
    InvalidReferenceError,
    ObjectMissingError,
    ReadError,
    StashConfig,
    XComCoordinate,
    XComStashError,
)
from xcomstash.format import container
from xcomstash.codecs.json import PLAIN_JSON, StructureConverter
from xcomstash.format.frames import FRAME_SIZE, ENTRY
from xcomstash.format.reference import MARKER, is_reference
from xcomstash.stores.local import FileReader

COORD = XComCoordinate(
    dag_id="etl_dag", run_id="scheduled__2026-11-23T10:00:00+00:00", task_id="extract", map_index=3, key="rows"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


def make_engine(root: Path, **config: Any) -> Engine:
    converter = config.pop("converter", PLAIN_JSON)
    return Engine(StashConfig(store_url=f"file://{root}", **config), converter=converter)


@pytest.fixture
def engine(root: Path) -> Engine:
    return make_engine(root, threshold=0)


def files(root: Path) -> list[Path]:
    """Every file under the store root, temporary ones included."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def objects(root: Path) -> list[Path]:
    """Stored objects: every file except the links that say which XComs use a blob."""
    return [p for p in files(root) if ".links" not in p.parts]


def links(root: Path) -> list[Path]:
    return [p for p in files(root) if ".links" in p.parts]


def object_path(root: Path, stored: dict) -> Path:
    assert stored["uri"].startswith(f"file://{root.resolve()}/")
    return Path(stored["uri"][len("file://") :])


def layout_of(path: Path) -> container.ObjectLayout:
    with FileReader(path) as reader:
        return container.read_layout(reader.size, reader.read_at)


def nine_column_frame(rows: int = 1_000) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": np.arange(rows),
            "b": np.linspace(0, 1, rows),
            "c": [f"s{i}" for i in range(rows)],
            "d": pd.Categorical(["x", "y"] * (rows // 2)),
            "e": pd.date_range("2026-01-01", periods=rows, freq="min", tz="UTC"),
            "f": np.arange(rows) % 2 == 0,
            "g": pd.array(range(rows), dtype="Int64"),
            "h": np.zeros(rows, dtype=np.float32),
            "i": pd.to_timedelta(np.arange(rows), unit="s"),
        }
    )


# =========================================================================== routing


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -1.5, "short", "", [1, "a"], {"k": [1, 2, {"n": None}]}],
    ids=repr,
)
def test_value_below_threshold_is_returned_as_the_converters_structure(root: Path, value) -> None:
    engine = make_engine(root, threshold=1024)
    stored = engine.serialize(value, COORD)
    assert stored == PLAIN_JSON.to_structure(value)
    assert stored is value
    assert engine.deserialize(stored) == value
    assert files(root) == []


def test_value_below_threshold_is_exactly_what_a_custom_converter_gives(root: Path) -> None:
    converter = StructureConverter(
        to_structure=lambda v: {"wrapped": list(v)} if isinstance(v, tuple) else v,
        from_structure=lambda s: tuple(s["wrapped"]) if isinstance(s, dict) and "wrapped" in s else s,
    )
    engine = make_engine(root, threshold=1024, converter=converter)
    stored = engine.serialize((1, 2, 3), COORD)
    assert stored == {"wrapped": [1, 2, 3]}
    assert engine.deserialize(stored) == (1, 2, 3)
    assert files(root) == []


def test_threshold_boundary_one_byte_below_inline_at_threshold_stored(root: Path) -> None:
    engine = make_engine(root, threshold=100)
    below = "x" * 97  # JSON '"xxx…"' is 99 bytes
    at = "x" * 98  # 100 bytes: at the threshold
    assert engine.serialize(below, COORD) == below
    stored = engine.serialize(at, COORD)
    assert is_reference(stored)
    assert engine.deserialize(stored) == at


def test_structured_value_above_threshold_is_stored(root: Path) -> None:
    engine = make_engine(root, threshold=64)
    value = {"rows": list(range(100))}
    stored = engine.serialize(value, COORD)
    assert is_reference(stored)
    assert stored["codec"] == "json"
    assert engine.deserialize(stored) == value


def test_huge_int_is_routed_by_its_encoded_size(root: Path) -> None:
    engine = make_engine(root, threshold=40)
    assert engine.serialize(2**64 - 1, COORD) == 2**64 - 1  # 20 digits: inline
    stored = engine.serialize(10**40, COORD)  # 41 digits >= 40 bytes
    assert is_reference(stored)
    assert engine.deserialize(stored) == 10**40


@pytest.mark.parametrize("value", [None, 0, "", {}, [], "x", {"a": 1}], ids=repr)
def test_exclusive_mode_stores_every_value(root: Path, value) -> None:
    engine = make_engine(root, exclusive=True)
    stored = engine.serialize(value, COORD)
    assert is_reference(stored)
    assert engine.deserialize(json.loads(json.dumps(stored))) == value
    assert len(objects(root)) == 1 and len(links(root)) == 1


@pytest.mark.parametrize(
    "user_value",
    [
        {MARKER: 1},
        {MARKER: "mine", "other": [1, 2]},
        # a user value that looks exactly like a valid reference
        {
            MARKER: 1,
            "summary": "DataFrame 1 rows x 1 cols",
            "type": "pandas.DataFrame",
            "codec": "pandas.arrow-ipc",
            "size": 10,
            "uri": "file:///elsewhere/x.xcs",
            "digest": "sha256:" + "0" * 64,
        },
    ],
    ids=["marker-only", "marker-and-data", "reference-lookalike"],
)
def test_user_dict_with_the_marker_is_never_inline_but_round_trips(root: Path, user_value: dict) -> None:
    engine = make_engine(root, threshold=1 << 20)
    stored = engine.serialize(user_value, COORD)
    assert stored is not user_value
    assert is_reference(stored)
    assert stored["uri"] != user_value.get("uri")
    assert stored["codec"] == "json"
    out = engine.deserialize(json.loads(json.dumps(stored)))
    assert out == user_value


def test_nested_marker_is_just_data_and_stays_inline(root: Path) -> None:
    engine = make_engine(root, threshold=1 << 20)
    value = {"payload": {MARKER: 1}}
    assert engine.serialize(value, COORD) is value
    assert engine.deserialize(value) == value


# =========================================================================== the reference


def test_reference_is_small_versioned_and_describes_the_value(engine: Engine) -> None:
    stored = engine.serialize(nine_column_frame(), COORD)
    assert set(stored) == {MARKER, "summary", "type", "codec", "size", "uri", "digest", "xcom"}
    assert stored["xcom"] == COORD.as_dict()
    assert stored[MARKER] == 1
    assert stored["summary"] == "DataFrame 1,000 rows x 9 cols"
    assert stored["type"] == "pandas.DataFrame"
    assert stored["codec"] == "pandas.arrow-ipc"
    assert stored["digest"].startswith("blake3:") and len(stored["digest"]) == 71
    assert len(json.dumps(stored).encode()) < 600
    digest_hex = stored["digest"].removeprefix("blake3:")
    assert stored["uri"].endswith(f"/etl_dag/scheduled__2026-11-23T10:00:00+00:00/.blobs/{digest_hex}.xcs")


def test_per_xcom_layout_names_the_object_after_the_xcom(root: Path) -> None:
    engine = make_engine(root, threshold=0, dedup=False)
    stored = engine.serialize(nine_column_frame(), COORD)
    assert stored["uri"].endswith("/etl_dag/scheduled__2026-11-23T10:00:00+00:00/extract/3/rows.xcs")
    assert links(root) == []


def test_reference_size_is_the_object_size(engine: Engine, root: Path) -> None:
    stored = engine.serialize(b"x" * 10_000, COORD)
    assert object_path(root, stored).stat().st_size == stored["size"]


# =========================================================================== object keys


def test_per_xcom_layout_pushing_twice_for_one_coordinate_overwrites_one_object(root: Path) -> None:
    engine = make_engine(root, threshold=0, dedup=False)
    first = engine.serialize(np.arange(1000), COORD)
    second = engine.serialize(np.arange(2000), COORD)
    assert first["uri"] == second["uri"]
    assert files(root) == [object_path(root, second)]  # no leaked object, no temp file
    np.testing.assert_array_equal(engine.deserialize(second), np.arange(2000))


def test_reference_to_an_overwritten_object_fails_instead_of_returning_the_new_value(
    root: Path,
) -> None:
    engine = make_engine(root, threshold=0, dedup=False)
    first = engine.serialize({"v": "old" * 100}, COORD)
    engine.serialize({"v": "new" * 100}, COORD)
    with pytest.raises(IntegrityError):
        engine.deserialize(first)


@pytest.mark.parametrize("dedup", [True, False], ids=["blobs", "per-xcom"])
def test_each_coordinate_field_gives_its_own_object(root: Path, dedup: bool) -> None:
    engine = make_engine(root, threshold=0, dedup=dedup)
    variants = [
        COORD,
        XComCoordinate("other_dag", COORD.run_id, COORD.task_id, COORD.map_index, COORD.key),
        XComCoordinate(COORD.dag_id, "manual__1", COORD.task_id, COORD.map_index, COORD.key),
        XComCoordinate(COORD.dag_id, COORD.run_id, "load", COORD.map_index, COORD.key),
        XComCoordinate(COORD.dag_id, COORD.run_id, COORD.task_id, -1, COORD.key),
        XComCoordinate(COORD.dag_id, COORD.run_id, COORD.task_id, COORD.map_index, "return_value"),
    ]
    stored = [engine.serialize(f"value {i}" * 10, c) for i, c in enumerate(variants)]
    assert len({s["uri"] for s in stored}) == len(variants)
    assert len(objects(root)) == len(variants)
    for i, s in enumerate(stored):
        assert engine.deserialize(s) == f"value {i}" * 10


# =========================================================================== purge


def test_purge_deletes_the_object_and_is_idempotent(engine: Engine, root: Path) -> None:
    stored = engine.serialize(b"payload", COORD)
    path = object_path(root, stored)
    assert path.exists()
    assert engine.purge(stored, COORD) is True
    assert not path.exists()
    assert engine.purge(stored, COORD) is True  # again: nothing to delete, no error
    assert files(root) == []
    with pytest.raises(ObjectMissingError):
        engine.deserialize(stored)


def test_purge_of_an_inline_value_does_nothing(root: Path) -> None:
    engine = make_engine(root, threshold=1024)
    assert engine.purge({"a": 1}, COORD) is False
    assert engine.purge("text", COORD) is False


def test_purge_of_a_reference_outside_the_store_deletes_nothing(engine: Engine, tmp_path: Path) -> None:
    victim = tmp_path / "victim.xcs"
    victim.write_bytes(b"keep me")
    stored = engine.serialize(b"payload", COORD)
    forged = {**stored, "uri": f"file://{victim}"}
    assert engine.purge(forged, COORD) is False
    forged = {**stored, "uri": stored["uri"].rsplit("/", 5)[0] + "/../victim.xcs"}
    assert engine.purge(forged, COORD) is False
    assert victim.read_bytes() == b"keep me"


# =========================================================================== self-describing object


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_stored_object_describes_itself(root: Path, compression: str) -> None:
    engine = make_engine(root, threshold=0, compression=compression)
    frame = nine_column_frame(50)
    stored = engine.serialize(frame, COORD)
    path = object_path(root, stored)
    layout = layout_of(path)

    header = layout.header
    assert (header.format, header.hash) == (container.FORMAT_VERSION, "blake3") == (2, "blake3")
    assert header.codec == "pandas.arrow-ipc"
    assert header.compression == compression
    assert header.python_type == "pandas.DataFrame"
    # A blob may serve several XComs of the run: it names the run, its links name the XComs.
    assert header.xcom == {"dag_id": "etl_dag", "run_id": "scheduled__2026-11-23T10:00:00+00:00"}
    (link,) = links(root)
    assert link.relative_to(root.resolve()).parts[2:] == (
        ".links", "extract", "3", "rows", stored["digest"].removeprefix("blake3:")
    )


    data = path.read_bytes()
    assert data.startswith(container.MAGIC)
    assert data.endswith(container.FOOTER_MAGIC)
    assert layout.digest == stored["digest"]
    assert layout.body_size == sum(f.stored_len for f in layout.frames)
    assert layout.raw_size == sum(f.raw_len for f in layout.frames)
    assert len(data) == (
        layout.body_offset + layout.body_size + len(layout.frames) * ENTRY.size + container.FOOTER_SIZE
    )
    if compression == "none":
        assert layout.body_size == layout.raw_size


def test_per_xcom_object_header_names_the_whole_xcom(root: Path) -> None:
    engine = make_engine(root, threshold=0, dedup=False)
    stored = engine.serialize(nine_column_frame(50), COORD)
    header = layout_of(object_path(root, stored)).header
    assert XComCoordinate(**header.xcom) == COORD


def test_footer_raw_size_is_the_codec_payload_size(engine: Engine, root: Path) -> None:
    data = os.urandom(FRAME_SIZE + 1)  # just more than one frame
    stored = engine.serialize(data, COORD)
    layout = layout_of(object_path(root, stored))
    assert layout.raw_size == len(data)
    assert len(layout.frames) == 2
    assert layout.header.codec == "bytes"
    assert layout.header.codec_meta == {"kind": "bytes"}
    assert layout.header.python_type == "bytes"


# =========================================================================== faults


def assert_read_error_names_the_xcom(error: ReadError, stored: dict) -> None:
    message = str(error)
    for part in (
        "dag_id='etl_dag'",
        "run_id='scheduled__2026-11-23T10:00:00+00:00'",
        "task_id='extract'",
        "map_index=3",
        "key='rows'",
        stored["uri"],
    ):
        assert part in message
    assert error.uri == stored["uri"]
    assert error.coordinate == COORD
    assert isinstance(error, XComStashError)


def test_deleted_object_raises_object_missing_naming_xcom_and_uri(engine: Engine, root: Path) -> None:
    stored = engine.serialize(np.arange(100), COORD)
    object_path(root, stored).unlink()
    with pytest.raises(ObjectMissingError) as info:
        engine.deserialize(stored)
    assert_read_error_names_the_xcom(info.value, stored)


def test_deleted_store_directory_raises_object_missing(engine: Engine, root: Path) -> None:
    stored = engine.serialize(np.arange(100), COORD)
    shutil.rmtree(root)
    with pytest.raises(ObjectMissingError) as info:
        engine.deserialize(stored)
    assert_read_error_names_the_xcom(info.value, stored)


def test_missing_object_error_names_the_callers_coordinate_for_a_reference_that_names_none(
    engine: Engine, root: Path
) -> None:
    stored = engine.serialize(b"x", COORD)
    object_path(root, stored).unlink()
    del stored["xcom"]  # a reference written before references named their XCom
    other = XComCoordinate("caller_dag", "r", "t", 0, "k")
    with pytest.raises(ObjectMissingError, match="caller_dag") as info:
        engine.deserialize(stored, other)
    assert info.value.coordinate == other


@pytest.mark.parametrize("keep", ["nothing", "one byte", "preamble", "header", "all but one byte"])
def test_truncated_object_raises_integrity_error(engine: Engine, root: Path, keep: str) -> None:
    stored = engine.serialize(np.arange(10_000), COORD)
    path = object_path(root, stored)
    layout = layout_of(path)
    length = {
        "nothing": 0,
        "one byte": 1,
        "preamble": container.PREAMBLE_SIZE,
        "header": layout.body_offset,
        "all but one byte": stored["size"] - 1,
    }[keep]
    with open(path, "r+b") as f:
        f.truncate(length)
    with pytest.raises(IntegrityError) as info:
        engine.deserialize(stored)
    assert_read_error_names_the_xcom(info.value, stored)


def test_truncated_object_with_a_matching_reference_size_still_raises(engine: Engine, root: Path) -> None:
    stored = engine.serialize(np.arange(10_000), COORD)
    path = object_path(root, stored)
    with open(path, "r+b") as f:
        f.truncate(stored["size"] - 100)
    with pytest.raises(IntegrityError):
        engine.deserialize({**stored, "size": stored["size"] - 100})


def test_object_with_bytes_appended_raises_integrity_error(engine: Engine, root: Path) -> None:
    stored = engine.serialize(np.arange(10_000), COORD)
    with open(object_path(root, stored), "ab") as f:
        f.write(b"\x00")
    with pytest.raises(IntegrityError):
        engine.deserialize(stored)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_one_byte_flipped_anywhere_in_a_small_object_raises_integrity_error(
    engine: Engine, root: Path
) -> None:
    stored = engine.serialize({"k": "v" * 40}, COORD)
    path = object_path(root, stored)
    original = path.read_bytes()
    for offset in range(len(original)):
        path.write_bytes(original)
        flip(path, offset)
        with pytest.raises(IntegrityError):
            engine.deserialize(stored)
    path.write_bytes(original)
    assert engine.deserialize(stored) == {"k": "v" * 40}


REGIONS = [
    "magic",
    "header length",
    "header json",
    "first body byte",
    "second frame",
    "last body byte",
    "frame table",
    "footer sizes",
    "footer frame count",
    "footer magic",
]


@pytest.mark.parametrize("region", REGIONS)
@pytest.mark.parametrize("payload", ["incompressible", "compressible"])
def test_one_byte_flipped_in_each_region_of_a_multi_frame_object_raises_integrity_error(
    root: Path, region: str, payload: str
) -> None:
    engine = make_engine(root, threshold=0, compression="zstd")
    data = os.urandom(9 * 1024 * 1024) if payload == "incompressible" else b"0123456789" * 900_000
    stored = engine.serialize(data, COORD)
    path = object_path(root, stored)
    layout = layout_of(path)
    assert len(layout.frames) >= 2
    if payload == "compressible":
        assert all(f.method == 1 for f in layout.frames)  # zstd frames
    size = stored["size"]
    table_start = layout.body_offset + layout.body_size
    offset = {
        "magic": 0,
        "header length": len(container.MAGIC),
        "header json": container.PREAMBLE_SIZE + 3,
        "first body byte": layout.body_offset,
        "second frame": layout.body_offset + layout.frames[0].stored_len + 7,
        "last body byte": table_start - 1,
        "frame table": table_start + 20,
        "footer sizes": size - container.FOOTER_SIZE,
        "footer frame count": size - container.FOOTER_SIZE + 16,
        "footer magic": size - 1,
    }[region]
    flip(path, offset)
    with pytest.raises(IntegrityError) as info:
        engine.deserialize(stored)
    assert_read_error_names_the_xcom(info.value, stored)


def test_object_replaced_by_another_valid_object_raises_integrity_error(engine: Engine, root: Path) -> None:
    other = XComCoordinate("etl_dag", COORD.run_id, "other", 3, "rows")
    stored = engine.serialize(np.arange(100, dtype=np.int64), COORD)
    other_stored = engine.serialize(np.arange(100, 200, dtype=np.int64), other)
    shutil.copyfile(object_path(root, other_stored), object_path(root, stored))
    with pytest.raises(IntegrityError):
        engine.deserialize(stored)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda r: {**r, "size": r["size"] + 1}, id="size+1"),
        pytest.param(lambda r: {**r, "size": r["size"] - 1}, id="size-1"),
        pytest.param(lambda r: {**r, "size": 0}, id="size-0"),
        pytest.param(lambda r: {**r, "digest": "sha256:" + "0" * 64}, id="digest-zeros"),
        pytest.param(
            lambda r: {**r, "digest": r["digest"][:-1] + ("0" if r["digest"][-1] != "0" else "1")},
            id="digest-last-char",
        ),
        pytest.param(lambda r: {**r, "codec": "numpy.npy"}, id="codec"),
    ],
)
def test_reference_with_edited_size_digest_or_codec_raises_integrity_error(engine: Engine, edit) -> None:
    stored = engine.serialize(pd.DataFrame({"a": [1, 2, 3]}), COORD)
    with pytest.raises(IntegrityError) as info:
        engine.deserialize(edit(stored))
    assert_read_error_names_the_xcom(info.value, stored)


def uri_variants(stored: dict, root: Path, tmp_path: Path) -> dict[str, str]:
    base = f"file://{root.resolve()}"
    key = stored["uri"][len(base) + 1 :]
    return {
        "other directory": f"file://{tmp_path / 'elsewhere'}/{key}",
        "absolute system path": "file:///etc/passwd",
        "sibling with the root as prefix": f"{base}x/{key}",
        "root itself": base,
        "root with slash": base + "/",
        "dotdot at start": f"{base}/../{key}",
        "dotdot inside": f"{base}/etl_dag/../../secret.xcs",
        "dot segment": f"{base}/./{key}",
        "empty segment": f"{base}//{key}",
        "backslash": f"{base}/etl_dag\\..\\x.xcs",
        "nul": f"{base}/etl_dag/x\x00.xcs",
        "s3 uri": f"s3://bucket/{key}",
        "relative": key,
    }


@pytest.mark.parametrize(
    "variant",
    [
        "other directory",
        "absolute system path",
        "sibling with the root as prefix",
        "root itself",
        "root with slash",
        "dotdot at start",
        "dotdot inside",
        "dot segment",
        "empty segment",
        "backslash",
        "nul",
        "s3 uri",
        "relative",
    ],
)
def test_reference_pointing_outside_the_store_raises_invalid_reference(
    engine: Engine, root: Path, tmp_path: Path, variant: str
) -> None:
    stored = engine.serialize(b"secret", COORD)
    # put a real, valid object where an escaping path would land, so only validation stops it
    (tmp_path / "elsewhere").mkdir()
    shutil.copytree(root, tmp_path / "elsewhere", dirs_exist_ok=True)
    forged = {**stored, "uri": uri_variants(stored, root, tmp_path)[variant]}
    with pytest.raises(InvalidReferenceError) as info:
        engine.deserialize(forged)
    assert isinstance(info.value, XComStashError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({MARKER: 1}, id="marker-only"),
        pytest.param({MARKER: 2, "uri": "x"}, id="future-version"),
        pytest.param({MARKER: 1, "uri": "file:///x", "size": 1, "digest": "md5:1", "codec": "c", "type": "t", "summary": ""}, id="bad-digest"),
    ],
)
def test_malformed_reference_row_raises_invalid_reference(engine: Engine, row: dict) -> None:
    with pytest.raises(InvalidReferenceError):
        engine.deserialize(row)


def test_read_errors_are_one_hierarchy() -> None:
    for error in (ObjectMissingError, IntegrityError):
        assert issubclass(error, ReadError) and issubclass(error, XComStashError)
    assert issubclass(InvalidReferenceError, XComStashError)


# =========================================================================== fuzz


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, dict, Path, bytes]:
    root = tmp_path_factory.mktemp("engine-fuzz")
    engine = make_engine(root, threshold=0)
    stored = engine.serialize({"v": list(range(50))}, COORD)
    path = object_path(root, stored)
    return engine, stored, path, path.read_bytes()


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_any_other_object_contents_raise_integrity_error(fuzz_target, data) -> None:
    engine, stored, path, original = fuzz_target
    contents = data.draw(
        st.one_of(
            st.binary(max_size=600),
            st.builds(lambda i, b: original[:i] + b + original[i + len(b) :], st.integers(0, len(original)), st.binary(min_size=1, max_size=16)),
        )
    )
    if contents == original:
        return
    path.write_bytes(contents)
    try:
        with pytest.raises(IntegrityError):
            engine.deserialize(stored)
    finally:
        path.write_bytes(original)
