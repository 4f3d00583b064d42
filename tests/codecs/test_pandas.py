"""pandas DataFrames through the whole engine: every pulled frame equals the pushed one exactly
(values, dtypes, index, index frequency, column labels and their names), or the push fails
with UnsupportedTypeError; a different frame never comes back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from tests.codecs.conftest import COORDINATE, row_roundtrip
from xcomstash import Engine, StashConfig, UnsupportedTypeError
from xcomstash.format.reference import is_reference


def assert_same_frame(out: object, expected: pd.DataFrame) -> None:
    assert type(out) is pd.DataFrame
    # "equiv" lets an empty/consecutive Index[int64] stand for a RangeIndex (same labels).
    pdt.assert_frame_equal(
        out,
        expected,
        check_dtype=True,
        check_index_type="equiv",
        check_column_type="equiv",
        check_exact=True,
        check_names=True,
        check_categorical=True,
        check_freq=True,
        check_flags=True,
    )
    assert list(out.columns) == list(expected.columns)
    assert list(out.columns.names) == list(expected.columns.names)
    assert list(out.index.names) == list(expected.index.names)


def demo_frame(rows: int = 1_000) -> pd.DataFrame:
    rng = np.random.default_rng(42)
    floats = rng.normal(size=rows)
    floats[::7] = np.nan
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "value": floats,
            "small": rng.integers(-100, 100, size=rows).astype(np.int8),
            "name": [f"item-{i % 37}-ü" for i in range(rows)],
            "region": pd.Categorical(rng.choice(["north", "south", "east"], size=rows)),
            "at": pd.date_range("2024-03-30", periods=rows, freq="min", tz="Europe/Paris"),
            "flag": rng.random(rows) > 0.5,
            "count": pd.array([None if i % 11 == 0 else i for i in range(rows)], dtype="Int64"),
            "took": pd.to_timedelta(rng.integers(0, 10_000, size=rows), unit="ms"),
        }
    )


def test_mixed_dtype_frame_round_trips_exactly(roundtrip) -> None:
    df = demo_frame()
    assert_same_frame(roundtrip(df), df)


# --------------------------------------------------------------------------- empty frames


def test_frame_with_zero_rows_keeps_columns_and_dtypes(roundtrip) -> None:
    df = pd.DataFrame(
        {
            "i": pd.Series([], dtype="int32"),
            "s": pd.Series([], dtype="str"),
            "t": pd.Series([], dtype="datetime64[us, UTC]"),
            "c": pd.Categorical([], categories=["a", "b"]),
            "n": pd.Series([], dtype="Int64"),
        }
    )
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert out.shape == (0, 5)


def test_frame_with_zero_columns_keeps_its_index(roundtrip) -> None:
    df = pd.DataFrame(index=pd.Index(["x", "y", "z"], name="key"))
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert out.shape == (3, 0)


def test_frame_with_no_rows_and_no_columns_round_trips(roundtrip) -> None:
    df = pd.DataFrame()
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert out.shape == (0, 0)


# --------------------------------------------------------------------------- dtypes


def test_categorical_keeps_categories_their_order_and_missing_values(roundtrip) -> None:
    df = pd.DataFrame(
        {
            "ordered": pd.Categorical(["b", "a", None, "b"], categories=["b", "a", "unused"], ordered=True),
            "ints": pd.Categorical([3, 1, 3, None]),
        }
    )
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert list(out["ordered"].cat.categories) == ["b", "a", "unused"]
    assert out["ordered"].cat.ordered


def test_timezone_aware_datetimes_keep_zone_unit_and_dst_offsets(roundtrip) -> None:
    df = pd.DataFrame(
        {
            # crosses the spring-forward transition in Paris
            "paris": pd.date_range("2024-03-31 00:00", periods=6, freq="30min", tz="Europe/Paris"),
            "tokyo_s": pd.date_range("2024-01-01", periods=6, freq="D", tz="Asia/Tokyo").as_unit("s"),
            "utc_ns": pd.Series(
                pd.to_datetime(
                    ["2024-01-01T00:00:00.123456789", None, "1970-01-01", "2262-04-11", None, "1677-09-22"],
                    utc=True,
                    format="ISO8601",
                )
            ).dt.as_unit("ns"),
            "naive_ms": pd.date_range("2024-01-01", periods=6, freq="h").as_unit("ms"),
        }
    )
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert str(out["paris"].dt.tz) == "Europe/Paris"
    assert out["tokyo_s"].dtype == df["tokyo_s"].dtype


def test_missing_values_keep_their_kind_per_dtype(roundtrip) -> None:
    df = pd.DataFrame(
        {
            "float_nan": [1.5, np.nan, None, -0.0],
            "nullable_int": pd.array([1, None, 3, pd.NA], dtype="Int64"),
            "nullable_bool": pd.array([True, None, False, pd.NA], dtype="boolean"),
            "nullable_string": pd.array(["x", None, pd.NA, ""], dtype="string"),
            "default_str": pd.Series(["a", None, "c", ""]),
            "nullable_float": pd.array([1.0, None, 2.5, pd.NA], dtype="Float64"),
        }
    )
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert out["nullable_int"].dtype == "Int64"
    assert out["nullable_int"][1] is pd.NA
    assert out["nullable_bool"][3] is pd.NA
    assert out["nullable_string"][2] is pd.NA
    assert np.signbit(out["float_nan"][3])


def test_object_dtype_strings_stay_object_with_none(roundtrip) -> None:
    # pandas 3 reads Arrow strings as its ``str`` dtype; a producer's object column stays object.
    df = pd.DataFrame(
        {"o": pd.Series(["a", None, "c"], dtype=object)},
        index=pd.Index(["x", "y", "z"], dtype=object),
    )
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert out["o"].dtype == object
    assert out["o"].iloc[1] is None
    assert out.index.dtype == object


def test_nullable_int64_extremes_round_trip(roundtrip) -> None:
    info = np.iinfo(np.int64)
    df = pd.DataFrame({"n": pd.array([info.min, None, info.max, 0], dtype="Int64")})
    assert_same_frame(roundtrip(df), df)


def test_unsigned_float16_and_interval_and_period_columns_round_trip(roundtrip) -> None:
    df = pd.DataFrame(
        {
            "u64": np.array([0, 2**64 - 1], dtype=np.uint64),
            "f16": np.array([1.5, -2.0], dtype=np.float16),
            "interval": pd.arrays.IntervalArray.from_breaks([0, 1, 2]),
            "period": pd.period_range("2020-01", periods=2, freq="M"),
            "bytes": pd.Series([b"\x00a", b"b"], dtype=object),
        }
    )
    assert_same_frame(roundtrip(df), df)


def test_column_arrow_cannot_encode_is_refused_at_push(engine: Engine, store_root: Path) -> None:
    df = pd.DataFrame({"mixed": pd.Series([1, "a"], dtype=object)})
    with pytest.raises(UnsupportedTypeError, match="pandas.DataFrame"):
        engine.serialize(df, COORDINATE)
    assert not list(store_root.rglob("*.xcs"))


# --------------------------------------------------------------------------- column labels


@pytest.mark.parametrize(
    "columns",
    [
        pytest.param([10, 20, 30], id="ints"),
        pytest.param(pd.RangeIndex(3), id="range"),
        pytest.param([0.5, 1.5, -2.0], id="floats"),
        pytest.param([True, False, None], id="bool-and-none"),
        pytest.param([1, "a", 2.5], id="mixed"),
        pytest.param(pd.Index([1, 2, 3], name="attribute"), id="named-ints"),
        pytest.param(pd.Index(["a", "b", "c"], name="attribute"), id="named-strings"),
        pytest.param(pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)]), id="multiindex"),
        pytest.param(
            pd.MultiIndex.from_tuples([("a", "x"), ("a", "y"), ("b", "x")], names=["outer", 7]),
            id="multiindex-named",
        ),
        pytest.param(pd.Index([("a", 1), "b", 3], dtype=object), id="tuple-among-labels"),
    ],
)
def test_non_string_column_labels_round_trip(roundtrip, columns) -> None:
    df = pd.DataFrame([[1, 2, 3], [4, 5, 6]], columns=columns)
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert type(out.columns) is type(df.columns) or isinstance(df.columns, pd.RangeIndex)


@pytest.mark.parametrize(
    "columns",
    [pd.RangeIndex(3), pd.RangeIndex(10, 16, 2, name="r"), pd.RangeIndex(0)],
    ids=["default", "stepped-named", "empty"],
)
def test_range_column_index_comes_back_as_the_same_range_index(roundtrip, columns) -> None:
    df = pd.DataFrame(np.zeros((2, len(columns))), columns=columns)
    out = roundtrip(df)
    pdt.assert_frame_equal(out, df, check_column_type=True, check_exact=True)
    assert out.columns.equals(columns) and type(out.columns) is pd.RangeIndex
    assert out.columns.name == columns.name


def test_wide_frame_from_an_array_round_trips(roundtrip) -> None:
    # 20,000 integer labels would not fit the 64 KiB object header if listed one by one
    df = pd.DataFrame(np.arange(28_000, dtype=np.float32).reshape(2, 14_000))
    out = roundtrip(df)
    assert type(out.columns) is pd.RangeIndex and out.columns.equals(df.columns)
    assert (out.dtypes == np.float32).all()
    assert np.array_equal(out.to_numpy(), df.to_numpy())


@pytest.mark.parametrize(
    "columns",
    [
        pytest.param(["a", "a"], id="duplicate-strings"),
        pytest.param([1, "1"], id="collide-as-strings"),
        pytest.param(pd.date_range("2024-01-01", periods=2), id="timestamps"),
    ],
)
def test_unstorable_column_labels_are_refused_at_push(
    engine: Engine, store_root: Path, columns
) -> None:
    df = pd.DataFrame([[1, 2]], columns=columns)
    with pytest.raises(UnsupportedTypeError, match="pandas.DataFrame"):
        engine.serialize(df, COORDINATE)
    assert not list(store_root.rglob("*.xcs"))


# --------------------------------------------------------------------------- index


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(pd.Index([5, 7, 9], name="id"), id="named-int"),
        pytest.param(pd.Index(["x", "y", "z"]), id="strings"),
        pytest.param(pd.Index([5, 7, 9], name=3), id="int-name"),
        pytest.param(pd.RangeIndex(10, 16, 2, name="r"), id="range-step"),
        pytest.param(pd.date_range("2024-01-01", periods=3, freq="D"), id="datetime-D"),
        pytest.param(pd.date_range("2024-01-01", periods=3, freq="15min", name="t"), id="datetime-15min"),
        pytest.param(pd.date_range("2024-01-01", periods=3, freq="B"), id="datetime-B"),
        pytest.param(pd.date_range("2024-01-31", periods=3, freq="ME"), id="datetime-ME"),
        pytest.param(pd.date_range("2024-03-31", periods=3, freq="h", tz="Europe/Paris"), id="datetime-tz-h"),
        pytest.param(pd.DatetimeIndex(["2024-01-01", "2024-01-03", "2024-01-04"]), id="datetime-no-freq"),
        pytest.param(pd.timedelta_range("1D", periods=3, freq="h"), id="timedelta-h"),
        pytest.param(pd.period_range("2024-01", periods=3, freq="M"), id="period-M"),
        pytest.param(pd.MultiIndex.from_product([["a"], [1, 2, 3]], names=["k", "n"]), id="multiindex"),
    ],
)
def test_index_round_trips_with_name_type_and_freq(roundtrip, index) -> None:
    df = pd.DataFrame({"v": [1.0, 2.0, 3.0]}, index=index)
    out = roundtrip(df)
    assert_same_frame(out, df)
    assert type(out.index) is type(df.index) or isinstance(df.index, pd.RangeIndex)
    assert getattr(out.index, "freq", None) == getattr(df.index, "freq", None)


def test_datetime_index_frequency_is_restored_not_just_equal_values(roundtrip) -> None:
    df = pd.DataFrame({"v": range(4)}, index=pd.date_range("2024-01-01", periods=4, freq="15min"))
    out = roundtrip(df)
    assert out.index.freq is not None
    assert out.index.freq == pd.tseries.frequencies.to_offset("15min")
    assert out.index.freqstr == "15min"


# --------------------------------------------------------------------------- the pulled frame


def test_pulled_frame_can_be_modified_in_place(roundtrip) -> None:
    df = pd.DataFrame({"a": np.arange(5.0), "b": np.arange(5), "s": list("abcde")})
    out = roundtrip(df)
    out.iloc[0, 0] = 99.0
    out.loc[1, "b"] = 7
    out["a"] += 1
    assert out["a"].tolist() == [100.0, 2.0, 3.0, 4.0, 5.0]
    assert out["b"].tolist() == [0, 7, 2, 3, 4]


def _edit_every_column(frame: pd.DataFrame) -> None:
    for label in frame.columns:
        frame.loc[frame.index[0], label] = frame.loc[frame.index[1], label]


def test_every_kind_of_pulled_column_can_be_modified_in_place(store_root: Path) -> None:
    """Numeric columns stay in the pulled payload, datetimes and categorical codes are zero-copy
    views of Arrow memory: each must still take an in-place edit (categoricals once did not)."""
    n = 50_000  # a payload past the small-buffer size, as large pulls have
    df = pd.DataFrame(
        {
            "f": np.arange(n, dtype=float), "i": np.arange(n), "u8": np.arange(n, dtype=np.uint8) ,
            "s": ["x"] * n, "o": np.array(["y"] * n, dtype=object), "b": [True] * n,
            "dt": pd.date_range("2020", periods=n, freq="s"), "tz": pd.date_range("2020", periods=n, freq="s", tz="UTC"),
            "td": pd.to_timedelta(np.arange(n), "s"), "cat": pd.Categorical(["a", "b"] * (n // 2)),
            "fnan": [np.nan] + [1.0] * (n - 1), "ni": pd.array([1, None] * (n // 2), dtype="Int64"),
        },
        index=pd.RangeIndex(10, 10 + n, name="idx"),
    )
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0))
    out = row_roundtrip(engine, df)
    assert_same_frame(out, df)
    _edit_every_column(out)
    expected = df.copy()
    _edit_every_column(expected)
    assert_same_frame(out, expected)
    out["f"] *= 2
    assert out["f"].iloc[2] == 4.0 and df["f"].iloc[2] == 2.0


def _root(array: np.ndarray) -> object:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array.base if array.base is not None else array


def test_numeric_columns_of_a_pulled_frame_are_not_copied_out_of_the_payload(store_root: Path) -> None:
    """The float columns of a pulled frame are views of the one verified payload buffer the
    pull read them into (what keeps a pull at about one copy of the value in memory)."""
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0))
    rng = np.random.default_rng(3)
    df = pd.DataFrame({f"c{i}": rng.random(100_000) for i in range(4)})
    out = row_roundtrip(engine, df)
    assert_same_frame(out, df)
    roots = {id(_root(out[c].to_numpy())) for c in out.columns}
    assert len(roots) == 1
    assert memoryview(_root(out["c0"].to_numpy())).nbytes >= 4 * 100_000 * 8  # one buffer holds them all


def test_frame_subclass_is_stored_by_the_dataframe_codec(roundtrip) -> None:
    class Tagged(pd.DataFrame):
        @property
        def _constructor(self):  # keep the subclass through pandas operations
            return Tagged

    df = Tagged({"a": [1, 2]})
    out = roundtrip(df)
    pdt.assert_frame_equal(out, pd.DataFrame({"a": [1, 2]}))


def test_small_frame_is_stored_below_threshold_with_the_plain_json_converter(
    store_root: Path,
) -> None:
    # Without Airflow's serde a DataFrame has no JSON form, so it cannot stay inline.
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=1 << 30))
    df = pd.DataFrame({"a": [1]})
    stored = engine.serialize(df, COORDINATE)
    assert is_reference(stored)
    assert stored["codec"] == "pandas.arrow-ipc"
    assert_same_frame(engine.deserialize(stored), df)


def test_large_frame_round_trips_across_many_frames(store_root: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0))
    rng = np.random.default_rng(1)
    df = pd.DataFrame({f"c{i}": rng.random(200_000) for i in range(8)})  # ~12.8 MB
    df["s"] = pd.Series(np.repeat(["alpha", "beta", "gamma", "delta"], 50_000))
    assert_same_frame(row_roundtrip(engine, df), df)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame(),
        pd.DataFrame({"b": np.ones(1000, dtype=bool), "i": np.zeros(1000, dtype="int8")}),
        pd.DataFrame({"s": ["x"] * 1000, "c": pd.Categorical(["a", "b"] * 500), "f": np.arange(1000.0)}),
        pd.DataFrame({"o": pd.Series([None, "y"] * 500, dtype=object)}, index=pd.RangeIndex(1000)),
    ],
    ids=["empty", "one-byte cells", "strings categories floats", "object"],
)
def test_the_cheap_size_bound_is_never_above_the_estimate(frame: pd.DataFrame) -> None:
    """A frame is stored without estimating only when even its cheap bound reaches the
    threshold: the bound must never be above what the estimate would have said."""
    from xcomstash.codecs.pandas import PandasDataFrameCodec

    codec = PandasDataFrameCodec()
    assert codec.size_at_least(frame) <= codec.estimate_size(frame)


class Writes:
    """A sink that keeps what it is given, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data) -> int:
        self.writes.append(bytes(data))
        return len(self.writes[-1])

    # what pyarrow asks of a file object
    closed = False

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return sum(len(w) for w in self.writes)


def test_a_small_frame_is_encoded_in_one_write_and_a_large_one_streamed_to_the_same_bytes(monkeypatch) -> None:
    from xcomstash.codecs import pandas as pandas_codec

    frame = pd.DataFrame({"x": np.arange(20_000, dtype=np.float64), "s": [f"v{i % 31}" for i in range(20_000)]})
    codec = pandas_codec.PandasDataFrameCodec()
    small = Writes()
    codec.encode(frame, small)
    assert len(small.writes) == 1
    # Past the threshold the same table is streamed, a write per column buffer: a large frame
    # is never held a second time in memory.
    monkeypatch.setattr(pandas_codec, "SINGLE_THREAD_CELLS", 1000)
    large = Writes()
    codec.encode(frame, large)
    assert len(large.writes) > 5
    assert b"".join(large.writes) == small.writes[0]
    assert_same_frame(codec.decode(memoryview(small.writes[0]), codec.meta(frame)), frame)


def test_a_frame_of_several_record_batches_joins_its_numeric_columns_and_gives_the_payload_back(
    store_root: Path, monkeypatch
) -> None:
    """Numeric columns stored in several record batches come back as one writable array each,
    and each copied piece's payload pages are released as it is copied. The string and
    nullable columns around them keep their memory in the payload and stay intact."""
    from xcomstash.codecs import arrow, release

    monkeypatch.setattr(arrow, "ROWS_PER_BATCH", 200_000)  # four batches; 1.6 MB pieces
    released: list[int] = []
    real = release.release
    monkeypatch.setattr(release, "release", lambda address, nbytes: released.append(real(address, nbytes)) or released[-1])
    n = 800_000
    rng = np.random.default_rng(5)
    df = pd.DataFrame(
        {
            "f": rng.random(n), "i": np.arange(n), "u": np.arange(n, dtype=np.uint32),
            "s": pd.Series(np.repeat(["alpha", "beta", "gamma", "delta"], n // 4)),
            "nan": np.where(np.arange(n) % 3 == 0, np.nan, 1.5), "ni": pd.array(np.arange(n), dtype="Int64"),
        }
    )
    engine = Engine(StashConfig(store_url=f"file://{store_root}", threshold=0))
    out = row_roundtrip(engine, df)
    assert_same_frame(out, df)
    assert sum(released) >= 3 * 4 * 1_500_000  # f, i (8 bytes a row) and u: every piece released
    roots = [_root(out[label].to_numpy()) for label in ("f", "i", "u")]
    assert [memoryview(root).nbytes for root in roots] == [n * 8, n * 8, n * 4]  # one array each
    _edit_every_column(out)
    expected = df.copy()
    _edit_every_column(expected)
    assert_same_frame(out, expected)
