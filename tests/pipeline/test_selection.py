"""Partial reads: only the requested columns and rows, byte-identical to slicing the full
value, fetching fewer bytes, and verified like full reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from xcomstash import Engine, IntegrityError, StashConfig, XComCoordinate
from xcomstash.errors import SelectionError
from xcomstash.codecs import arrow

ROWS_PER_BATCH = 20_000  # small batches and frames keep the test fast; the logic is the same
ROWS = ROWS_PER_BATCH * 2 + 12_345  # three record batches, the last one short


@pytest.fixture(autouse=True)
def small_batches_and_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrow, "ROWS_PER_BATCH", ROWS_PER_BATCH)
    monkeypatch.setattr("xcomstash.format.frames.FRAME_SIZE", 64 * 1024)


@pytest.fixture()
def engine(tmp_path: Path) -> Engine:
    return Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    df = pd.DataFrame({f"f{i}": rng.standard_normal(ROWS) for i in range(8)})
    df["label"] = pd.array(rng.integers(0, 1000, ROWS).astype(str), dtype="str")
    return df


def coord(key: str) -> XComCoordinate:
    return XComCoordinate("dag", "run", "task", -1, key)


def test_one_column_of_nine_matches_the_full_read_and_fetches_a_fraction(engine, frame):
    ref = engine.serialize(frame, coord("a"))
    value, stats = engine.read_table(ref, columns=["f3"])
    pd.testing.assert_frame_equal(value, frame[["f3"]])
    assert stats is not None and stats.bytes_fetched < ref["size"] * 0.25


@pytest.mark.parametrize(
    "rows",
    [(0, 10), (ROWS_PER_BATCH - 5, ROWS_PER_BATCH + 5), (ROWS - 3, ROWS), (100, None), (ROWS, None)],
)
def test_row_ranges_match_iloc_including_the_range_index(engine, frame, rows):
    ref = engine.serialize(frame, coord("b"))
    value, _ = engine.read_table(ref, columns=["f0", "label"], rows=rows)
    pd.testing.assert_frame_equal(value, frame[["f0", "label"]].iloc[rows[0] : rows[1]])


def test_a_named_index_comes_back_with_the_projection(engine, frame):
    indexed = frame.head(5000).set_index(pd.date_range("2026-01-01", periods=5000, freq="s", name="ts"))
    ref = engine.serialize(indexed, coord("c"))
    value, _ = engine.read_table(ref, columns=["f1"], rows=(10, 20))
    pd.testing.assert_frame_equal(value, indexed[["f1"]].iloc[10:20], check_freq=False)


def test_arrow_tables_are_read_partially(engine, frame):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    ref = engine.serialize(table, coord("d"))
    value, stats = engine.read_table(ref, columns=["f2"], rows=(5, ROWS_PER_BATCH + 7))
    assert value.equals(table.select(["f2"]).slice(5, ROWS_PER_BATCH + 2))
    assert stats is not None and stats.frames_fetched < stats.frames_total


def test_values_without_partial_support_are_read_whole_and_sliced(engine):
    df = pl.DataFrame({"a": list(range(100)), "b": [str(i) for i in range(100)]})
    ref = engine.serialize(df, coord("e"))
    value, stats = engine.read_table(ref, columns=["b"], rows=(3, 6))
    assert stats is None
    assert value.equals(df.select(["b"]).slice(3, 3))
    small = pd.DataFrame({1: [1, 2, 3], 2: [4, 5, 6]})  # non-string labels
    value, _ = engine.read_table(engine.serialize(small, coord("f")), columns=[2])
    pd.testing.assert_frame_equal(value, small[[2]])


def test_unknown_columns_are_a_selection_error(engine, frame):
    ref = engine.serialize(frame.head(100), coord("g"))
    with pytest.raises(SelectionError, match="nope"):
        engine.read_table(ref, columns=["nope"])


def test_a_flipped_byte_in_a_needed_frame_is_an_integrity_error(engine, frame, tmp_path):
    ref = engine.serialize(frame, coord("h"))
    path = Path(ref["uri"][len("file://") :])
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the body, in some column's frames
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        for column in frame.columns:  # one of them lives in the damaged frame
            engine.read_table(ref, columns=[column])


def test_framed_file_of_an_encrypted_object_reads_what_a_whole_read_does(tmp_path: Path) -> None:
    """FramedFile opens frames through open_frame, so given the object's cipher it serves the
    payload of an encrypted object too, byte for byte what read_frames assembles."""
    from concurrent.futures import ThreadPoolExecutor

    from xcomstash.format.container import read_layout
    from xcomstash.format.frames import read_frames
    from xcomstash.pipeline.selection import FramedFile
    from xcomstash.security.crypto.keyset import KeyRing, Keyset
    from xcomstash.security.crypto.stream import Envelope, open_object
    from xcomstash.security.guard import Guard, SecurityConfig

    keyset = Keyset.generate()
    guard = Guard(SecurityConfig(keyring=KeyRing.single(keyset), encrypt=True), None, lambda: None)
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0, read_ahead=False), guard=guard)
    coordinate = XComCoordinate("d", "r", "t", -1, "return_value")
    stored = engine.serialize(np.arange(100_000, dtype=np.int64).tobytes(), coordinate)
    reader = engine.store.open_reader(engine.store.key_for(stored["uri"]))
    try:
        layout = read_layout(reader.size, reader.read_at)
        assert layout.key_slot is not None and len(layout.frames) > 2
        envelope = Envelope.from_header(layout.header.encryption)
        cipher = open_object(keyset, envelope, layout.header_bytes, layout.key_slot, "d", "r")
        with ThreadPoolExecutor(2) as pool:
            whole = read_frames(layout.frames, layout.body_offset, reader.read_at, reader.readinto_at, pool, cipher)
        source = FramedFile(layout, reader, cipher)
        source.seek(len(whole) - 70_000)
        tail = source.read()
        source.seek(0)
        assert source.read() == bytes(whole) and tail == bytes(whole[-70_000:])
    finally:
        reader.close()
