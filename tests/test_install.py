"""A plain ``pip install xcomstash`` (the wheel built from this checkout, into a new, empty
virtualenv, with pandas as a user's DAG would bring it) pushes and pulls what Airflow users
return most: a DataFrame and a NumPy array. No extra is needed for either."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROUND_TRIP = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    from xcomstash import Engine, StashConfig, XComCoordinate

    engine = Engine(StashConfig(store_url="file://" + sys.argv[1], threshold=0))
    frame = pd.DataFrame({"a": range(1000), "b": [f"row {i}" for i in range(1000)]})
    array = np.arange(10_000, dtype=np.float32).reshape(100, 100)
    for key, value in (("frame", frame), ("array", array)):
        coordinate = XComCoordinate("dag", "run", "task", -1, key)
        stored = engine.serialize(value, coordinate)
        assert stored["__xcomstash__"] == 1, stored
        back = engine.deserialize(stored, coordinate)
        same = back.equals(value) if key == "frame" else np.array_equal(back, value)
        assert same, key
    print("ROUND-TRIP-OK")
    """
)


def uv_command() -> list[str]:
    """uv as scripts/bootstrap.sh installed it (into the Python that made .venv), or on PATH."""
    if shutil.which("uv"):
        return [shutil.which("uv") or "uv"]
    return [os.environ.get("PYTHON", "python3"), "-m", "uv"]


def uv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*uv_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_a_plain_wheel_install_pushes_and_pulls_dataframes_and_arrays(tmp_path: Path) -> None:
    assert uv("--version").returncode == 0, "uv (installed by scripts/bootstrap.sh) is not available"
    dist = tmp_path / "dist"
    built = uv("build", "--wheel", "--out-dir", str(dist), str(ROOT), cwd=ROOT)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("xcomstash-*.whl")
    venv = tmp_path / "venv"
    made = uv("venv", "--python", sys.executable, str(venv))
    assert made.returncode == 0, made.stderr[-3000:]
    python = venv / "bin" / "python"
    installed = uv("pip", "install", "--python", str(python), str(wheel), "pandas")
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = uv("pip", "list", "--python", str(python))
    assert "pyarrow" in listed.stdout and "numpy" in listed.stdout, listed.stdout
    store = tmp_path / "store"
    store.mkdir()
    run = subprocess.run([str(python), "-c", ROUND_TRIP, str(store)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "ROUND-TRIP-OK" in run.stdout, run.stderr[-3000:]
