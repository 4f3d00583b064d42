"""``xcomstash inspect``: a stored object described from the object alone, as a local path or
a file:// URI (store URIs: tests/stores/test_s3_airflow_connection.py); a table by default,
one JSON document with --json; a file that is no object is exit status 1 with a message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xcomstash import Engine, StashConfig, XComCoordinate
from xcomstash.cli import main

COORD = XComCoordinate("etl", "manual__1", "load", -1, "return_value")


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, dict]:
    engine = Engine(StashConfig(store_url=f"file://{tmp_path}", threshold=0, read_ahead=False))
    ref = engine.serialize(np.arange(50_000, dtype=np.int64), COORD)
    return tmp_path / engine.store.key_for(ref["uri"]), ref


def test_a_local_object_is_described_by_path_and_by_uri(stored, capsys) -> None:
    path, ref = stored
    assert main(["inspect", str(path), "--json"]) == 0
    by_path = json.loads(capsys.readouterr().out)
    assert by_path["codec"] == "numpy.npy" and by_path["xcom"]["dag_id"] == "etl" and by_path["digest"] == ref["digest"]
    assert main(["inspect", ref["uri"], "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == ref["digest"]


def test_without_json_it_prints_one_line_per_field(stored, capsys) -> None:
    path, _ = stored
    assert main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("codec ") and "numpy.npy" in line for line in lines)
    assert not lines[0].startswith("{")


def test_a_file_that_is_no_object_is_exit_status_1_naming_it(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.xcs"
    junk.write_bytes(b"not an object" * 10)
    assert main(["inspect", str(junk)]) == 1
    assert "junk.xcs" in capsys.readouterr().err
