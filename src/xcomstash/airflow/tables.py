"""``pull_table``: read only some columns/rows of a table another task returned.

Inside a task::

    from xcomstash.airflow.tables import pull_table

    prices = pull_table("extract", columns=["price"], rows=(0, 10_000))

Only the bytes that hold those columns and rows are fetched (and verified); see
:meth:`xcomstash.engine.Engine.read_table`. The reference passes the same checks as any pull
(signature, written for this XCom, readers, integrity) and the read is audited.
"""

from __future__ import annotations

from typing import Any, Sequence

from xcomstash.airflow.backend import XComStashBackend, _expected, _Row
from xcomstash.airflow.settings import engine
from xcomstash.pipeline.selection import select_in_memory


def pull_table(
    task_id: str,
    key: str = "return_value",
    *,
    columns: Sequence[str] | None = None,
    rows: tuple[int, int | None] | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    map_index: int = -1,
) -> Any:
    """The selected columns and rows ``[start, stop)`` of a pushed DataFrame or Arrow table.

    ``dag_id`` and ``run_id`` default to the running task's. Returns ``None`` when no such XCom
    exists, like ``xcom_pull``.
    """
    if dag_id is None or run_id is None:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        dag_id = dag_id or ti.dag_id
        run_id = run_id or ti.run_id
    result = XComStashBackend._get_xcom_db_ref(
        key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index
    )
    if result.value is None:
        return None
    from xcomstash.airflow import legacy

    # The reference must have been written for the XCom asked for (not copied into its row).
    expected = _expected(dag_id, run_id, task_id, map_index, key, include_prior_dates=False)
    if legacy.looks_legacy(result.value):
        return select_in_memory(XComStashBackend.deserialize_value(_Row(result.value), expected), columns, rows)
    value, _stats = engine().read_table(result.value, columns, rows, expected=expected)
    return value
