"""xcomstash on every supported Airflow minor besides the main one.

The main ``.venv`` (and so the rest of the suite) runs Airflow 3.3; xcomstash declares
``apache-airflow>=3.1,<3.4``. For the newest release of each other minor this tier makes a
virtualenv with uv (cached between runs, tests/versions/venvs.py), installs that release pinned
exactly plus this checkout, and runs the demo DAG (demo/dags) with ``airflow dags test`` on
SQLite with a local-directory store and ``threshold = 0``, so that every value goes through the
store: a DataFrame, a NumPy array, small JSON, a mapped fan-out and its fan-in. Then
``xcomstash reconcile --dry-run`` reads the metadata database with that release's models.

The releases run side by side (one thread each); each is one ``dags test`` and one CLI run.

``dags test`` runs through :data:`DAGS_TEST`, which gives the command the per-process cache of
Airflow's in-process execution API that Airflow 3.3 has (``in_process_api_server`` under
``functools.lru_cache``); 3.1 and 3.2 build the app and Cadwyn's versioned routes again for
every task, 10-20 s of CPU each, most of this tier's cost. The tasks, their execution API
calls and the XCom backend's are the release's own.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.harness.airflow import MARKER, REPO, XCOMSTASH_BACKEND, clean_environ, decode_column, record_command
from tests.versions.venvs import Installation, Release, ensure, installed_version

pytestmark = pytest.mark.versions

#: The newest release of each supported minor other than the main one (3.3, in uv.lock).
RELEASES = (
    Release("3.1.8", exclude_newer="2026-04-01"),  # released 2026-03-11
    Release("3.2.2", exclude_newer="2026-06-01"),  # released 2026-05-29
)
DAG_ID = "xcomstash_demo"
DEMO_DAG = REPO / "demo" / "dags" / "xcomstash_demo.py"
#: A smaller extract than the demo's 500,000 rows: the same paths, less CPU (Airflow 3.1
#: spends tens of seconds rendering a 500,000-row DataFrame argument as a template field).
ROWS = 20_000
REGION_ROWS = 100_000  # per_region's frames (fixed in the DAG)
TASKS = {("extract", -1), ("stats", -1), ("features", -1), ("regions", -1), ("combine", -1)} | {
    ("per_region", i) for i in range(3)
}
RUN_TIMEOUT_S = 600
#: ``airflow dags test DAG_ID`` as the release's ``airflow`` script runs it, with
#: ``supervisor.in_process_api_server`` cached per process as in Airflow 3.3 (every task of
#: the run looks it up by that name).
DAGS_TEST = """\
import functools, sys
from airflow.sdk.execution_time import supervisor
if not hasattr(supervisor.in_process_api_server, "cache_info"):
    supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
from airflow.__main__ import main
sys.argv = ["airflow", "dags", "test", *sys.argv[1:]]
sys.exit(main())
"""


@dataclass
class DemoRun:
    installation: Installation
    root: Path
    returncode: int
    output: str
    seconds: float
    reconcile: subprocess.CompletedProcess[str] | None = None

    @property
    def db(self) -> Path:
        return self.root / "airflow.db"

    @property
    def store(self) -> Path:
        return self.root / "store"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return list(conn.execute(sql, params))

    def describe(self) -> str:
        return f"{self.root} (exit {self.returncode}, {self.seconds:.0f}s)\n{self.output[-6000:]}"


def _environ(run_root: Path) -> dict[str, str]:
    env = clean_environ()
    env.pop("PYTHONPATH", None)  # the virtualenv's own xcomstash (editable), nothing of .venv
    env.update(
        AIRFLOW_HOME=str(run_root / "home"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{run_root / 'airflow.db'}",
        AIRFLOW__CORE__DAGS_FOLDER=str(run_root / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__XCOM_BACKEND=XCOMSTASH_BACKEND,
        AIRFLOW__XCOMSTASH__STORE_URL=f"file://{run_root / 'store'}",
        AIRFLOW__XCOMSTASH__THRESHOLD="0",  # every value to the store, however small
        AIRFLOW__XCOMSTASH__CACHE_DIR=str(run_root / "cache"),
        XCOMSTASH_DEMO_ROWS=str(ROWS),
    )
    return env


def _timed(
    argv: list[str], env: dict[str, str], cwd: Path, release: Release
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    seconds = time.perf_counter() - started
    record_command(argv, seconds, None, airflow=release.airflow)
    return proc, seconds


def run_demo(release: Release, root: Path) -> DemoRun:
    installation = ensure(release)
    for sub in ("home", "dags"):
        (root / sub).mkdir(parents=True)
    shutil.copy(DEMO_DAG, root / "dags")
    shutil.copyfile(installation.migrated_db, root / "airflow.db")
    env = _environ(root)
    proc, seconds = _timed([str(installation.python), "-c", DAGS_TEST, DAG_ID], env, root, release)
    run = DemoRun(installation, root, proc.returncode, proc.stdout + proc.stderr, seconds)
    (root / "dags-test.log").write_text(run.output)
    run.reconcile, _ = _timed(
        [str(installation.bin("xcomstash")), "reconcile", "--dry-run", "--grace", "0s", "--json"], env, root, release
    )
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DemoRun]:
    base = tmp_path_factory.mktemp("airflow-minors")
    with ThreadPoolExecutor(max_workers=len(RELEASES)) as pool:
        futures = {r.airflow: pool.submit(run_demo, r, base / r.airflow) for r in RELEASES}
        return {name: future.result() for name, future in futures.items()}


def expected_features() -> np.ndarray:
    """What ``features`` returns: the demo's first eight random columns, column-major."""
    rng = np.random.default_rng(42)
    return np.asfortranarray(np.column_stack([rng.standard_normal(ROWS) for _ in range(8)]))


def read_stored(run: DemoRun, reference: dict[str, Any]) -> Any:
    """A stored value decoded by the engine alone (this process's xcomstash, no Airflow)."""
    from xcomstash import Engine, StashConfig

    return Engine(StashConfig(store_url=f"file://{run.store}", read_ahead=False)).deserialize(reference)


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.airflow)
def test_demo_dag_succeeds_on_the_pinned_release_with_every_value_in_the_store(
    runs: dict[str, DemoRun], release: Release
) -> None:
    run = runs[release.airflow]
    assert installed_version(run.installation, "apache-airflow") == release.airflow
    assert installed_version(run.installation, "apache-airflow-core") == release.airflow
    assert run.returncode == 0, run.describe()
    (dag_run,) = run.query("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG_ID,))
    states = {
        (r["task_id"], r["map_index"]): r["state"]
        for r in run.query("SELECT task_id, map_index, state FROM task_instance WHERE run_id = ?", (dag_run["run_id"],))
    }
    assert dag_run["state"] == "success" and states == {t: "success" for t in TASKS}, (states, run.describe())

    rows = {
        (r["task_id"], r["map_index"], r["key"]): decode_column(r["value"])
        for r in run.query('SELECT task_id, map_index, "key", value FROM xcom WHERE run_id = ?', (dag_run["run_id"],))
    }
    # Every XCom, the small ones too, is a reference to an object in the store directory.
    assert {(t, m) for t, m, k in rows if k == "return_value"} == TASKS
    assert ("extract", -1, "extract_digest") in rows
    for coordinate, value in rows.items():
        assert isinstance(value, dict) and MARKER in value, (coordinate, value)
        path = Path(value["uri"].removeprefix("file://"))
        assert run.store in path.parents and path.stat().st_size > 0, (coordinate, value["uri"])

    # What went through the store is what the tasks made, and the fan-in got every part.
    features = read_stored(run, rows[("features", -1, "return_value")])
    assert features.flags.f_contiguous and np.array_equal(features, expected_features())
    assert read_stored(run, rows[("stats", -1, "return_value")])["rows"] == ROWS
    assert [len(read_stored(run, rows[("per_region", i, "return_value")])) for i in range(3)] == [REGION_ROWS] * 3
    combined = read_stored(run, rows[("combine", -1, "return_value")])
    assert combined["regions"] == 3 and combined["rows"] == 3 * REGION_ROWS, combined
    assert combined["array_sum"] == pytest.approx(float(expected_features().sum()), rel=1e-9)


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r.airflow)
def test_reconcile_reads_the_release_metadata_database_and_finds_every_object_referenced(
    runs: dict[str, DemoRun], release: Release
) -> None:
    run = runs[release.airflow]
    assert run.returncode == 0, run.describe()
    assert run.reconcile is not None
    assert run.reconcile.returncode == 0, run.reconcile.stdout[-3000:] + run.reconcile.stderr[-3000:]
    report = json.loads(run.reconcile.stdout)
    (xcoms,) = run.query("SELECT count(*) AS n FROM xcom WHERE dag_id = ?", (DAG_ID,))
    assert report["references"] == report["rows_scanned"] == xcoms["n"] > 0, report["summary"]
    assert report["listed"]["count"] == report["live"]["count"] > 0, report["summary"]
    assert report["orphans"]["count"] == report["missing"]["count"] == 0 and not report["errors"], report["summary"]
