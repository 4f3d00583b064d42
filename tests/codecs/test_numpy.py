"""NumPy arrays and scalars through the whole engine: dtype, shape, memory order and values come
back exactly; scalars keep their NumPy type; object arrays are refused at push time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.codecs.conftest import COORDINATE, row_roundtrip
from xcomstash import Engine, StashConfig, UnsupportedTypeError
from xcomstash.codecs import CodecRegistry, default_registry
from xcomstash.codecs.json import StructureConverter
from xcomstash.format.reference import is_reference


def assert_same_array(out: object, expected: np.ndarray) -> None:
    assert type(out) is np.ndarray
    assert out.dtype == expected.dtype
    assert out.shape == expected.shape
    assert out.flags.f_contiguous == expected.flags.f_contiguous
    assert out.flags.c_contiguous == expected.flags.c_contiguous
    assert out.tobytes(order="A") == expected.tobytes(order="A")
    if expected.dtype.names is None:
        equal_nan = expected.dtype.kind in "fcmM"
        assert np.array_equal(out, expected, equal_nan=equal_nan)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.array(3.5), id="0d-float"),
        pytest.param(np.array(-7, dtype=np.int16), id="0d-int16"),
        pytest.param(np.array("ü", dtype="U1"), id="0d-unicode"),
        pytest.param(np.arange(12, dtype=np.float64).reshape(3, 4), id="c-order-2d"),
        pytest.param(np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)), id="fortran-2d"),
        pytest.param(np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)), id="fortran-3d"),
        pytest.param(
            np.array(
                [(1, 2.5, b"ab", (1.0, 2.0)), (3, -4.5, b"c", (3.0, 4.0))],
                dtype=[("a", "<i4"), ("b", ">f8"), ("c", "S2"), ("p", [("x", "<f4"), ("y", "<f4")])],
            ),
            id="structured-nested",
        ),
        pytest.param(np.zeros(3, dtype=[("arr", "<i2", (2, 2)), ("flag", "?")]), id="structured-subarray"),
        pytest.param(np.array(["2024-01-01T00:00", "NaT", "1970-01-01T00:01"], dtype="datetime64[ms]"), id="datetime64-ms"),
        pytest.param(np.array(["2024-01-01", "2024-03-31"], dtype="datetime64[D]"), id="datetime64-D"),
        pytest.param(np.array([1, "NaT", -5], dtype="timedelta64[s]"), id="timedelta64"),
        pytest.param(np.array([], dtype=np.float32), id="empty-1d"),
        pytest.param(np.zeros((0, 3)), id="empty-0-rows"),
        pytest.param(np.asfortranarray(np.zeros((3, 0), dtype=np.int8)), id="empty-fortran"),
        pytest.param(np.array(["ü", "abc", ""]), id="unicode"),
        pytest.param(np.array([b"\x00a", b"b"]), id="bytes"),
        pytest.param(np.arange(3, dtype=">i8"), id="big-endian"),
        pytest.param(np.array([1 + 2j, np.nan + 0j], dtype=np.complex64), id="complex"),
        pytest.param(np.array([np.nan, -0.0, np.inf, -np.inf, 5e-324]), id="special-floats"),
        pytest.param(np.array([True, False, True]), id="bool"),
        pytest.param(np.arange(5, dtype=np.float16), id="float16"),
        pytest.param(np.array([np.iinfo(np.uint64).max, 0], dtype=np.uint64), id="uint64-max"),
        pytest.param(np.frombuffer(b"\x01\x02\x03\x04", dtype="V2"), id="void"),
    ],
)
def test_array_round_trips_with_dtype_shape_and_order(roundtrip, array: np.ndarray) -> None:
    assert_same_array(roundtrip(array), array)


def test_fortran_order_is_kept_not_just_values(roundtrip) -> None:
    array = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    out = roundtrip(array)
    assert out.flags.f_contiguous and not out.flags.c_contiguous
    assert out.strides == array.strides


def test_non_contiguous_view_comes_back_as_equal_contiguous_array(roundtrip) -> None:
    base = np.arange(40, dtype=np.int64).reshape(4, 10)
    view = base[::2, 1::3]
    out = roundtrip(view)
    assert type(out) is np.ndarray and out.dtype == view.dtype and out.shape == view.shape
    assert np.array_equal(out, view)


def test_large_array_spanning_many_frames_round_trips(roundtrip) -> None:
    array = np.random.default_rng(7).random((1_500, 1_000))  # 12 MB: several 4 MiB frames
    assert_same_array(roundtrip(array), array)


def test_pulled_array_is_writable(roundtrip) -> None:
    out = roundtrip(np.arange(10.0))
    out[0] = 42.0
    assert out[0] == 42.0


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.array([1, "a", None], dtype=object), id="object"),
        pytest.param(np.zeros(2, dtype=[("a", "i4"), ("o", "O")]), id="structured-with-object"),
        pytest.param(np.array(["a", "b"], dtype=np.dtypes.StringDType()), id="StringDType"),
    ],
)
def test_arrays_that_would_need_pickle_are_refused_naming_the_dtype(
    engine: Engine, store_root: Path, array: np.ndarray
) -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        engine.serialize(array, COORDINATE)
    assert f"numpy.ndarray[{array.dtype}]" in str(info.value)
    assert info.value.type_name == f"numpy.ndarray[{array.dtype}]"
    assert not list(store_root.rglob("*.xcs"))


def test_masked_array_is_refused_rather_than_losing_its_mask(engine: Engine, store_root: Path) -> None:
    masked = np.ma.masked_array([1, 2, 3], mask=[False, True, False])
    with pytest.raises(UnsupportedTypeError, match="MaskedArray"):
        engine.serialize(masked, COORDINATE)
    assert not list(store_root.rglob("*.xcs"))


def test_reference_describes_the_array(engine: Engine) -> None:
    stored = engine.serialize(np.zeros((500, 8)), COORDINATE)
    assert stored["summary"] == "ndarray float64 500 x 8"
    assert stored["type"] == "numpy.ndarray"
    assert stored["codec"] == "numpy.npy"


# --------------------------------------------------------------------------- scalars

SCALARS = [
    pytest.param(np.float64(1.5), id="float64"),
    pytest.param(np.float64("nan"), id="float64-nan"),
    pytest.param(np.float32(-0.0), id="float32-negzero"),
    pytest.param(np.float16(1.5), id="float16"),
    pytest.param(np.int32(-3), id="int32"),
    pytest.param(np.int64(np.iinfo(np.int64).min), id="int64-min"),
    pytest.param(np.uint8(255), id="uint8"),
    pytest.param(np.bool_(True), id="bool"),
    pytest.param(np.bool_(False), id="bool-false"),
    pytest.param(np.complex64(1 - 2j), id="complex64"),
    pytest.param(np.str_("ü-text"), id="str_"),
    pytest.param(np.bytes_(b"ab\x00c"), id="bytes_"),
    pytest.param(np.datetime64("2024-02-29T12:00", "m"), id="datetime64"),
    pytest.param(np.timedelta64(5, "s"), id="timedelta64"),
]


def assert_same_scalar(out: object, expected: np.generic) -> None:
    assert type(out) is type(expected)
    if isinstance(expected, (np.generic,)) and hasattr(expected, "dtype"):
        assert out.dtype == expected.dtype
    assert np.asarray(out).tobytes() == np.asarray(expected).tobytes()


@pytest.mark.parametrize("scalar", SCALARS)
def test_numpy_scalar_stored_comes_back_with_its_numpy_type(roundtrip, scalar: np.generic) -> None:
    assert_same_scalar(roundtrip(scalar), scalar)


def test_float64_scalar_is_not_turned_into_a_python_float(roundtrip) -> None:
    out = roundtrip(np.float64(2.25))
    assert type(out) is np.float64
    assert type(out) is not float


@pytest.mark.parametrize("scalar", SCALARS)
def test_small_numpy_scalar_is_stored_below_threshold_with_plain_json_converter(
    store_root: Path, scalar: np.generic
) -> None:
    # PLAIN_JSON has no JSON form for NumPy scalars (it would lose the type), so the engine
    # falls back to storing them even though they are far below the threshold.
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 20))
    stored = engine.serialize(scalar, COORDINATE)
    assert is_reference(stored)
    if isinstance(scalar, bytes):  # numpy.bytes_ subclasses bytes: the bytes codec takes it
        assert stored["codec"] == "bytes"
    else:
        assert stored["codec"] == "numpy.scalar"
        assert stored["summary"] == f"numpy.{type(scalar).__name__}"
    assert_same_scalar(engine.deserialize(stored), scalar)


def _tagged_scalars() -> StructureConverter:
    """A converter that can inline NumPy scalars (as Airflow's serde can)."""

    def to_structure(value):
        if isinstance(value, np.generic):
            return {"np": value.dtype.str, "hex": np.asarray(value).tobytes().hex()}
        return value

    def from_structure(structure):
        if isinstance(structure, dict) and set(structure) == {"np", "hex"}:
            return np.frombuffer(bytes.fromhex(structure["hex"]), dtype=structure["np"])[0]
        return structure

    return StructureConverter(to_structure, from_structure)


@pytest.mark.parametrize("scalar", [np.float64(1.5), np.int32(-3), np.bool_(True)], ids=str)
def test_small_numpy_scalar_stays_inline_when_the_converter_can_hold_it(
    store_root: Path, scalar: np.generic
) -> None:
    converter = _tagged_scalars()
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 20), converter=converter)
    stored = engine.serialize(scalar, COORDINATE)
    assert not is_reference(stored)
    assert stored == converter.to_structure(scalar)
    assert_same_scalar(engine.deserialize(stored), scalar)
    assert not list(store_root.rglob("*.xcs"))


def test_numpy_scalar_at_threshold_is_stored_even_if_the_converter_could_inline_it(
    store_root: Path,
) -> None:
    scalar = np.float64(1.5)  # nbytes 8
    engine = Engine(
        StashConfig(store_url=f"file://{store_root}", threshold=scalar.nbytes), converter=_tagged_scalars()
    )
    stored = engine.serialize(scalar, COORDINATE)
    assert is_reference(stored)
    assert_same_scalar(engine.deserialize(stored), scalar)


def test_array_is_stored_even_when_far_below_threshold(store_root: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 30))
    array = np.arange(3)
    stored = engine.serialize(array, COORDINATE)
    assert is_reference(stored)
    assert_same_array(engine.deserialize(stored), array)


def test_scalar_and_array_codecs_are_in_the_default_registry() -> None:
    assert default_registry.for_value(np.float64(1)).name == "numpy.scalar"
    assert default_registry.for_value(np.bytes_(b"x")).name == "bytes"
    assert default_registry.for_value(np.zeros(1)).name == "numpy.npy"
    assert CodecRegistry().for_value(np.zeros(1)) is None


# --------------------------------------------------------------------------- properties

_dtypes = st.one_of(
    hnp.integer_dtypes(endianness="="),
    hnp.unsigned_integer_dtypes(endianness="="),
    hnp.floating_dtypes(endianness="="),
    hnp.complex_number_dtypes(endianness="="),
    hnp.boolean_dtypes(),
    hnp.datetime64_dtypes(endianness="="),
    hnp.timedelta64_dtypes(endianness="="),
    hnp.byte_string_dtypes(endianness="=", max_len=4),
    hnp.unicode_string_dtypes(endianness="=", max_len=4),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    array=hnp.arrays(dtype=_dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    fortran=st.booleans(),
)
def test_any_typed_array_round_trips_exactly(module_engine: Engine, array: np.ndarray, fortran: bool) -> None:
    if fortran:
        array = np.asfortranarray(array)
    assert_same_array(row_roundtrip(module_engine, array), array)


@settings(max_examples=50, deadline=None)
@given(array=hnp.arrays(dtype=_dtypes, shape=()))
def test_any_numpy_scalar_round_trips_with_its_type(module_engine: Engine, array: np.ndarray) -> None:
    scalar = array[()]
    assert_same_scalar(row_roundtrip(module_engine, scalar), scalar)
