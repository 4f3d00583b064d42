"""Reconcile at scale: 1,000,000 xcom rows against a local store of over a million objects.

    .venv/bin/python -m bench.reconcile [--rows 1000000] [--workdir DIR] [--keep]

Builds a real Airflow SQLite metadata database (``airflow db migrate``) and fills its xcom
table with ``--rows`` references, and a local store with the objects they reference, in the
content-addressed layout (blobs shared by two rows each, one link per row) and the per-XCom
layout, plus orphans (objects of runs whose rows are gone, about 5% of the objects). Then
runs the real CLI, ``xcomstash reconcile --json`` (rows through Airflow's ORM), twice: a dry
run, then the collecting run, and reports wall time and peak RSS of each, and checks that the
store ends up holding exactly the referenced keys. Objects are sparse files (their sizes are
real in the listing, their bytes are not on disk): reconcile never reads object contents.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from xcomstash.coordinate import XComCoordinate  # noqa: E402

#: Per DAG run: 40 blobs shared by 2 rows each (80 rows, 80 links) + 45 per-XCom objects.
BLOBS_PER_RUN = 40
LEGACY_PER_RUN = 45
ROWS_PER_RUN = 2 * BLOBS_PER_RUN + LEGACY_PER_RUN
ORPHAN_RUN_EVERY = 20  # every 20th run has lost its rows
OBJECT_BYTES = 150_000


def reference(uri: str, hex_digest: str, coordinate: XComCoordinate | None = None) -> str:
    doc = {
        "__xcomstash__": 1,
        "summary": "bytes 150,000 B",
        "type": "bytes",
        "codec": "bytes",
        "size": OBJECT_BYTES,
        "uri": uri,
        "digest": f"sha256:{hex_digest}",
    }
    if coordinate is not None:
        doc["xcom"] = coordinate.as_dict()
    return json.dumps(doc)


def touch(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, OBJECT_BYTES)
    finally:
        os.close(fd)


def build(store: Path, db: Path, rows: int) -> dict[str, int]:
    runs = -(-rows // ROWS_PER_RUN)
    root_uri = "file://" + str(store.resolve())
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    made_rows = 0
    files = 0
    orphan_files = 0
    referenced_files = 0
    batch: list[tuple] = []
    orphan_run = 0
    run = 0
    while made_rows < rows:
        orphan = run % ORPHAN_RUN_EVERY == ORPHAN_RUN_EVERY - 1
        dag_id = f"bench_dag_{run % 97}"
        run_id = f"scheduled__2026-01-01T00:00:00+00:00#{run}"
        made_dirs: set[str] = set()

        def put(key: str) -> None:
            path = os.path.join(store, key)
            parent = os.path.dirname(path)
            if parent not in made_dirs:
                os.makedirs(parent, exist_ok=True)
                made_dirs.add(parent)
            touch(path)

        for b in range(BLOBS_PER_RUN):
            hex_digest = hashlib.sha256(f"{run}-{b}".encode()).hexdigest()
            first = XComCoordinate(dag_id, run_id, f"task_{b}", -1, "return_value")
            put(first.blob_key(hex_digest))
            files += 1
            for copy in range(2):
                c = XComCoordinate(dag_id, run_id, f"task_{b}", copy - 1, "return_value")
                put(c.link_key(hex_digest))
                files += 1
                if not orphan and made_rows < rows:
                    batch.append((run + 1, c.task_id, c.map_index, c.key, dag_id, run_id,
                                  reference(f"{root_uri}/{first.blob_key(hex_digest)}", hex_digest, c)))
                    made_rows += 1
        for j in range(LEGACY_PER_RUN):
            c = XComCoordinate(dag_id, run_id, f"legacy_{j}", -1, "return_value")
            put(c.object_key())
            files += 1
            if not orphan and made_rows < rows:
                hex_digest = hashlib.sha256(f"{run}-legacy-{j}".encode()).hexdigest()
                batch.append((run + 1, c.task_id, c.map_index, c.key, dag_id, run_id,
                              reference(f"{root_uri}/{c.object_key()}", hex_digest)))
                made_rows += 1
        if orphan:
            orphan_run += 1
            orphan_files += BLOBS_PER_RUN * 3 + LEGACY_PER_RUN
        if len(batch) >= 50_000:
            _insert(conn, batch)
            batch = []
        run += 1
        if run % 500 == 0:
            print(f"  built {run:,} runs, {made_rows:,} rows, {files:,} files", file=sys.stderr)
    _insert(conn, batch)
    conn.commit()
    conn.close()
    referenced_files = files - orphan_files
    return {"runs": run, "rows": made_rows, "files": files, "orphan_files": orphan_files,
            "referenced_files": referenced_files, "orphan_runs": orphan_run}


def _insert(conn: sqlite3.Connection, batch: list[tuple]) -> None:
    conn.executemany(
        'INSERT INTO xcom (dag_run_id, task_id, map_index, "key", dag_id, run_id, value, timestamp, dag_result) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, datetime('now'), 0)",
        batch,
    )


def count_files(store: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(store))


def run_cli(env: dict[str, str], *args: str) -> tuple[dict, float, float, float]:
    """(report, wall seconds, peak RSS MiB, CPU seconds) of one ``xcomstash`` run in a child
    process. CPU seconds are what the run costs on a machine shared with other work."""
    code = "import sys\nfrom xcomstash.cli import main\nsys.exit(main(sys.argv[1:]))"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = after.ru_maxrss / 1024
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"  xcomstash {' '.join(args)}: {seconds:.1f}s wall, {cpu:.1f}s CPU", file=sys.stderr)
    if proc.returncode not in (0, 2):
        raise SystemExit(f"xcomstash {' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    return json.loads(out), seconds, peak, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="xcomstash-bench-gc-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        sys.path.insert(0, str(ROOT))
        from tests.airflow.harness import clean_environ, migrate_template

        t = time.perf_counter()
        db = migrate_template(work / "airflow")
        print(f"airflow db migrate: {time.perf_counter() - t:.1f}s", file=sys.stderr)
        store = work / "store"
        store.mkdir(exist_ok=True)
        t = time.perf_counter()
        built = build(store, db, args.rows)
        print(f"built in {time.perf_counter() - t:.1f}s: {built}", file=sys.stderr)
        env = clean_environ()
        env.update(
            AIRFLOW_HOME=str(work / "airflow"),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{db}",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__XCOMSTASH__STORE_URL=f"file://{store}",
            PYTHONPATH=str(ROOT / "src"),
            # Cached bytecode, as an installed CLI has (without it Airflow's import alone
            # compiles for seconds).
            PYTHONPYCACHEPREFIX=os.path.join(tempfile.gettempdir(), "xcomstash-bench-pycache"),
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # The page cache holds the fresh tree either way; a first listing warms it the same
        # for both timed runs.
        dry, dry_s, _, dry_cpu = run_cli(env, "reconcile", "--dry-run", "--grace", "0s", "--json", "--quiet")
        real, real_s, peak, real_cpu = run_cli(env, "reconcile", "--grace", "0s", "--json", "--quiet")
        left = count_files(store)
        ok = (
            dry["orphans"]["count"] == built["orphan_files"]
            and real["deleted"]["count"] == built["orphan_files"]
            and left == built["referenced_files"]
            and real["live"]["count"] == built["referenced_files"]
            and real["missing"]["count"] == 0
        )
        result = {
            "rows": built["rows"],
            "objects_listed": real["listed"]["count"],
            "orphans": built["orphan_files"],
            "dry_run_seconds": round(dry_s, 1),
            "dry_run_cpu_seconds": round(dry_cpu, 1),
            "reconcile_seconds": round(real_s, 1),
            "reconcile_cpu_seconds": round(real_cpu, 1),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
            "engine_seconds": real["seconds"],
            "peak_rss_mib_max_of_both": round(peak),
            "store_exact_after": ok,
            "summary": real["summary"],
        }
        print(json.dumps(result, indent=2))
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
