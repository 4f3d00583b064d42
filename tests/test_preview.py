"""Previews: what the Airflow UI's XCom tab shows of a value, built through the engine's pull
path (same checks, audited as previews), reading a bounded part of a stored table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from xcomstash import Engine, Restricted, StashConfig, XComCoordinate
from xcomstash.errors import AccessDeniedError, IntegrityError, KeyUnavailableError, ReferenceSignatureError
from xcomstash.observe.audit import AuditLog, AuditRecorder, Query, StoreSink, read_events
from xcomstash.preview import PreviewLimits, hexdump, value_preview
from xcomstash.security.crypto.keyset import KeyRing, Keyset
from xcomstash.security.guard import Guard, SecurityConfig
from xcomstash.security.sensitive import Scanner
from xcomstash.stores import LocalStore
from xcomstash.stores.faulty import FaultyStore

XCOM = XComCoordinate("sales", "run1", "produce", -1, "return_value")
SCANNER = Scanner()


def frame(rows: int) -> pd.DataFrame:
    ids = np.arange(rows)
    return pd.DataFrame({
        "id": ids,
        "city": np.array(["Lisbon", "Osaka", "Quito"])[ids % 3],
        "amount": np.where(ids % 5 == 2, np.nan, ids / 4),
        "api_key": [f"k{k}" for k in ids],
    })


def engine_over(store, guard: Guard | None = None, **extra) -> Engine:
    config = StashConfig(store_url=store.root_uri, threshold=0, read_ahead=False, compression="zstd")
    return Engine(config, store=store, guard=guard, **extra)


# ----------------------------------------------------------------------- value previews


def test_a_table_preview_has_schema_row_count_and_first_rows_with_sensitive_columns_masked() -> None:
    p = value_preview(frame(100), PreviewLimits(rows=3), SCANNER)
    assert p.kind == "table" and p.data["num_rows"] == 100 and p.data["shown_rows"] == 3
    assert [(c["name"], c["dtype"]) for c in p.data["columns"]] == [
        ("id", "int64"), ("city", str(frame(1)["city"].dtype)), ("amount", "float64"), ("api_key", str(frame(1)["api_key"].dtype))
    ]
    assert p.data["rows"] == [[0, "Lisbon", 0.0, "***"], [1, "Osaka", 0.25, "***"], [2, "Quito", None, "***"]]


@pytest.mark.parametrize("make", [lambda df: pl.from_pandas(df), lambda df: pa.Table.from_pandas(df, preserve_index=False)])
def test_polars_and_arrow_tables_are_previewed_like_pandas(make) -> None:
    p = value_preview(make(frame(50)), PreviewLimits(rows=2), SCANNER)
    assert p.kind == "table" and p.data["num_rows"] == 50
    assert [row[:2] for row in p.data["rows"]] == [[0, "Lisbon"], [1, "Osaka"]]


def test_an_array_preview_has_shape_dtype_order_and_statistics_ignoring_nans() -> None:
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    a[0, 0] = np.nan
    p = value_preview(a, PreviewLimits(), SCANNER)
    assert p.data["shape"] == [3, 4] and p.data["dtype"] == "float32" and p.data["order"] == "F"
    assert p.data["summary"] == {"nan": 1, "min": 1.0, "max": 11.0, "mean": pytest.approx(6.0)}
    ints = value_preview(np.array([[3, -1]], dtype=np.int16), PreviewLimits(), SCANNER)
    assert ints.data["order"] == "C" and ints.data["summary"] == {"nan": 0, "min": -1, "max": 3, "mean": 1.0}


def test_json_is_pretty_printed_masked_and_cut_at_the_limit() -> None:
    value = {"owner": "team", "password": "hunter2", "rows": list(range(1000))}
    p = value_preview(value, PreviewLimits(json_chars=200), SCANNER)
    assert p.data["truncated"] and len(p.data["text"]) == 200 and "cut at 200" in p.note
    whole = value_preview(value, PreviewLimits(), SCANNER).data["text"]
    assert json.loads(whole)["password"] == "***" and json.loads(whole)["owner"] == "team"
    assert value_preview((1, {2}), PreviewLimits(), SCANNER).data["text"] == "[\n  1,\n  [\n    2\n  ]\n]"


def test_bytes_show_a_hex_head_unless_they_look_like_secrets() -> None:
    p = value_preview(b"ABC\x00" * 300, PreviewLimits(hex_bytes=32), SCANNER)
    assert p.data["length"] == 1200 and p.data["shown"] == 32
    assert p.data["hex"].splitlines()[0] == "00000000  41 42 43 00 41 42 43 00 41 42 43 00 41 42 43 00  |ABC.ABC.ABC.ABC.|"
    secret = value_preview(b"-----BEGIN RSA PRIVATE KEY-----\nMIIEow", PreviewLimits(), SCANNER)
    assert secret.data["hex"] == "" and "not shown" in secret.note
    assert hexdump(b"") == ""


# --------------------------------------------------------------------- through the engine


@pytest.fixture(autouse=True)
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("xcomstash.format.frames.FRAME_SIZE", 64 * 1024)


def test_a_stored_table_is_previewed_from_a_bounded_part_of_its_object(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(tmp_path))  # no faults: it counts the bytes served
    engine = engine_over(store)
    results = {}
    for rows in (20_000, 400_000):
        coordinate = XComCoordinate("sales", "run1", "produce", -1, f"rows{rows}")
        stored = engine.serialize(frame(rows), coordinate)
        before = store.bytes_read
        results[rows] = (engine.preview(stored, coordinate, PreviewLimits(rows=20)), store.bytes_read - before)
    small, small_bytes = results[20_000]
    big, big_bytes = results[400_000]
    assert big.preview.data["num_rows"] == 400_000 and len(big.preview.data["rows"]) == 20
    assert big.preview.data["rows"][:2] == [[0, "Lisbon", 0.0, "***"], [1, "Osaka", 0.25, "***"]]
    assert big.stored.frames > 20 * small.stored.frames // 2  # many more frames...
    assert big.read["frames_fetched"] <= small.read["frames_fetched"] + 2  # ...but as many fetched
    assert big_bytes < big.stored.size / 10 and big_bytes < 3 * small_bytes
    assert big.stored.location == "store" and big.stored.codec == "pandas.arrow-ipc" and big.stored.ratio > 1


def test_inline_values_are_previewed_with_their_row_size(tmp_path: Path) -> None:
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=1 << 20))
    stored = engine.serialize({"a": 1}, XCOM)
    result = engine.preview(stored, XCOM)
    assert result.stored.location == "inline" and result.stored.size == len(json.dumps(stored, separators=(",", ":")))
    assert result.preview.data["text"] == '{\n  "a": 1\n}' and result.read == {}


def test_values_read_whole_are_not_read_beyond_the_limit(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(tmp_path))
    engine = engine_over(store)
    limits = PreviewLimits(whole_bytes=10_000)
    arr_at = XComCoordinate("sales", "run1", "produce", -1, "array")
    array = engine.preview(engine.serialize(np.zeros((300, 200), order="F"), arr_at), arr_at, limits)
    assert array.preview.data == {"shape": [300, 200], "dtype": "float64", "order": "F"}
    assert "statistics not computed" in array.preview.note and array.read["frames_fetched"] == 1
    js_at = XComCoordinate("sales", "run1", "produce", -1, "json")
    js = engine.preview(engine.serialize({"rows": list(range(20_000))}, js_at), js_at, limits)
    assert js.preview.kind == "none" and js.read["bytes_fetched"] == 0
    small_js = engine.preview(engine.serialize({"rows": [1]}, js_at), js_at, limits)
    assert small_js.preview.kind == "json"


def test_a_preview_makes_the_checks_of_a_pull(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    engine = engine_over(store)
    stored = engine.serialize(frame(1000), XCOM)
    other = XComCoordinate("sales", "run1", "other_task", -1, "return_value")
    with pytest.raises(ReferenceSignatureError, match="copied into another XCom"):
        engine.preview(dict(stored), other)
    restricted = engine.serialize(Restricted(frame(10), tasks=["load"]), XCOM)
    with pytest.raises(AccessDeniedError):
        engine.preview(restricted, XCOM)
    path = Path(stored["uri"][len("file://"):])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        engine.preview(stored, XCOM)


def test_an_encrypted_value_is_previewed_only_where_its_key_is(tmp_path: Path) -> None:
    store, keyset = LocalStore(tmp_path), Keyset.generate()
    keyed = Guard(SecurityConfig(keyring=KeyRing.single(keyset), encrypt=True, sign_references=True))
    engine = engine_over(store, keyed)
    stored = engine.serialize(frame(5000), XCOM)
    result = engine.preview(stored, XCOM, PreviewLimits(rows=2))
    assert result.stored.encrypted and result.stored.key_id == keyset.primary.id
    assert result.preview.data["rows"][1][:2] == [1, "Osaka"]
    elsewhere = engine_over(store, Guard(SecurityConfig(keyring=KeyRing.single(Keyset.generate()))))
    with pytest.raises((KeyUnavailableError, ReferenceSignatureError)):
        elsewhere.preview(stored, XCOM)
    keyless = engine_over(store)
    with pytest.raises(KeyUnavailableError):
        keyless.preview(stored, XCOM)


def test_previews_are_audited_with_the_person_who_looked(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    sink = StoreSink(store, flush_events=1)
    engine = engine_over(store, subscribers=[AuditRecorder(AuditLog([sink]))])
    stored = engine.serialize(frame(100), XCOM)
    engine.preview(stored, XCOM, actor={"user": "alice", "via": "airflow ui"})
    restricted = engine.serialize(Restricted(frame(10), tasks=["load"]), XCOM)
    with pytest.raises(AccessDeniedError):
        engine.preview(restricted, XCOM, actor={"user": "bob", "via": "airflow ui"})
    engine.flush()
    previews = list(read_events(store, Query(op="preview")))
    assert [(e.outcome, e.actor) for e in previews] == [
        ("ok", {"user": "alice", "via": "airflow ui"}), ("denied", {"user": "bob", "via": "airflow ui"})
    ]
    assert previews[0].xcom == XCOM.as_dict() and previews[0].uri == stored["uri"]


def test_a_stored_frames_index_is_shown_by_its_name(tmp_path: Path) -> None:
    engine = engine_over(LocalStore(tmp_path))
    df = pd.DataFrame({"v": [1.5, 2.5]}, index=pd.Index(["a", "b"], name="code"))
    unnamed = pd.DataFrame({"v": [1, 2]}, index=pd.Index([10, 20]))
    named = engine.preview(engine.serialize(df, XCOM), XCOM).preview.data
    assert [c["name"] for c in named["columns"]] == ["v", "(code)"] and named["rows"] == [[1.5, "a"], [2.5, "b"]]
    other = engine.preview(engine.serialize(unnamed, XCOM), XCOM).preview.data
    assert [c["name"] for c in other["columns"]] == ["v", "(index)"] and other["columns"][1]["index"]
