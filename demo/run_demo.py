"""Run the demo pipeline in real Airflow (`airflow dags test`, SQLite, local directory store)
and print where each XCom value went, its size, and what pushing and pulling it cost.

Usage: .venv/bin/python demo/run_demo.py   (the README's `make demo` does this)

The store is a local directory unless ``AIRFLOW__XCOMSTASH__STORE_URL`` names another (any
store URL xcomstash accepts, e.g. ``gs://my_gcp@bucket/demo``, with the Airflow connection it
names set the usual way, e.g. ``AIRFLOW_CONN_MY_GCP``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".demo"
BIN = Path(sys.executable).parent
console = Console(width=max(130, shutil.get_terminal_size((130, 40)).columns))


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, check=False
    )


def main() -> int:
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir()
    trace = HOME / "trace.jsonl"
    store_url = os.environ.get("AIRFLOW__XCOMSTASH__STORE_URL") or f"file://{HOME / 'store'}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__XCOM_BACKEND": "xcomstash.airflow.backend.XComStashBackend",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "demo" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__XCOMSTASH__STORE_URL": store_url,
        "AIRFLOW__XCOMSTASH__TRACE_FILE": str(trace),
        # Encryption, signed references and the durable audit log: a keyset file made like
        # `xcomstash keys generate` does (mode 0600, as Airflow's fernet key should be).
        "AIRFLOW__XCOMSTASH__KEYSETS": f"file:{make_keyset(HOME / 'keyset.json')}",
    }
    console.print(f"[bold]xcomstash demo[/] — AIRFLOW_HOME={HOME}")
    console.print(f"  store: {store_url}")
    console.print(f"  values encrypted and references signed with {HOME / 'keyset.json'} (mode 0600)")
    started = time.perf_counter()
    migrate = airflow(env, "db", "migrate")
    if migrate.returncode:
        console.print(migrate.stdout[-3000:], migrate.stderr[-3000:])
        return 1
    console.print(f"  airflow db migrate (SQLite): {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    run = airflow(env, "dags", "test", "xcomstash_demo")
    (HOME / "dags-test.log").write_text(run.stdout + run.stderr)
    elapsed = time.perf_counter() - started
    state = "success" if "state=success" in run.stdout + run.stderr else "failed"
    console.print(f"  airflow dags test xcomstash_demo: {state} in {elapsed:.1f}s "
                  f"(log: {HOME / 'dags-test.log'})")
    if run.returncode or state != "success" or not trace.exists():
        console.print("[red]demo run failed[/]; last lines of the log:")
        console.print((run.stdout + run.stderr)[-4000:])
        return 1
    print_table([json.loads(line) for line in trace.read_text().splitlines()])
    show_reference_row(HOME / "airflow.db")
    return 0


def make_keyset(path: Path) -> Path:
    from xcomstash.security.crypto.keyset import Keyset, write_keyset_file

    return write_keyset_file(path, Keyset.generate())


def show_reference_row(db: Path) -> None:
    """What the Airflow UI shows for an offloaded value: the reference in the xcom row."""
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "select value from xcom where task_id = 'extract' and key = 'return_value'"
        ).fetchone()
    if row:
        value = row[0].decode() if isinstance(row[0], bytes) else row[0]
        console.print("The xcom row of extract/return_value (what the Airflow UI shows):")
        console.print_json(value)


def print_table(events: list[dict]) -> None:
    pulls: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e["op"] == "pull" and e["uri"]:
            pulls[e["uri"]].append(e["seconds"])
    table = Table(title="Where each XCom value went")
    for col, justify in [("task[map]", "left"), ("key", "left"), ("value", "left"),
                         ("where", "left"), ("bytes", "right"),
                         ("push ms", "right"), ("pull ms (each pull)", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    stored_total = raw_total = 0
    for e in events:
        if e["op"] != "push":
            continue
        x = e["xcom"]
        stored = e["route"] == "stored"
        times = pulls.get(e["uri"], [])
        if stored:
            stored_total += e["stored_bytes"]
            raw_total += e["extra"].get("raw_bytes", 0)
        table.add_row(
            x["task_id"] + (f"[{x['map_index']}]" if x["map_index"] >= 0 else ""),
            x["key"], e["summary"],
            "[green]store[/]" if stored else "inline",
            f"{e['stored_bytes']:,}",
            f"{e['seconds'] * 1000:.1f}",
            ", ".join(f"{t * 1000:.1f}" for t in times) if stored else "(read from the xcom row)",
        )
    console.print(table)
    console.print(f"Stored objects: {stored_total:,} bytes stored for {raw_total:,} bytes encoded "
                  f"(zstd). Inline values are read straight from the xcom row.")


if __name__ == "__main__":
    sys.exit(main())
