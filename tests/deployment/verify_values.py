"""Out-of-band check of every XCom of some DAGs, run as a child process with the deployment's
environment (so xcomstash is configured exactly as on the workers, minus the read cache):

    python verify_values.py DAG_ID [DAG_ID ...]   ->  one JSON document on stdout

For each xcom row: is it inline or a reference; for a reference, does the object exist, does it
read back through xcomstash (size, root digest, frames) and decode; and for every value with a
``digest_<key>`` row next to it, does the decoded value have the digest its producer recorded.
The test process asserts on the result; this script only reports.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def _dsn() -> str:
    url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def _rows(dag_ids: list[str]) -> list[dict[str, Any]]:
    import psycopg2

    with psycopg2.connect(_dsn()) as conn, conn.cursor() as cur:
        cur.execute(
            "select dag_id, run_id, task_id, map_index, key, value from xcom "
            "where dag_id = any(%s) order by dag_id, run_id, task_id, map_index, key",
            (dag_ids,),
        )
        out = []
        for dag_id, run_id, task_id, map_index, key, value in cur.fetchall():
            if isinstance(value, str):  # Airflow may keep the JSON text in the JSONB column
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            out.append(dict(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
                            key=key, value=value))
        return out


def main(dag_ids: list[str]) -> dict[str, Any]:
    import xd_common as C
    from xcomstash.airflow.settings import engine
    from xcomstash.format.reference import Reference, is_reference

    eng = engine()
    rows = _rows(dag_ids)
    digests = {
        (r["dag_id"], r["run_id"], r["task_id"], r["map_index"], r["key"][len("digest_"):]): r["value"]
        for r in rows
        if r["key"].startswith("digest_")
    }
    report: list[dict[str, Any]] = []
    for r in rows:
        if r["key"].startswith("digest_"):
            continue
        entry: dict[str, Any] = {k: r[k] for k in ("dag_id", "run_id", "task_id", "map_index", "key")}
        stored = r["value"]
        entry["reference"] = is_reference(stored)
        try:
            if entry["reference"]:
                ref = Reference.from_json(stored)
                entry["uri"], entry["size"] = ref.uri, ref.size
                value = eng.deserialize(stored)
            else:
                value = eng.deserialize(stored)
            entry["digest"] = C.digest(value)
            entry["read"] = "ok"
        except Exception as exc:  # report, do not stop: the test decides what is acceptable
            entry["read"] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=3)[-1500:]
        expected = digests.get((r["dag_id"], r["run_id"], r["task_id"], r["map_index"], r["key"]))
        entry["expected"] = expected
        entry["verified"] = expected is not None and entry.get("digest") == expected
        report.append(entry)
    return {"rows": report}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), default=str))
