"""Reading an XCom's value from a notebook or a debugging shell, with this installation's
``[xcomstash]`` configuration and connections but without its metadata database."""

from __future__ import annotations

from typing import Any

from xcomstash.coordinate import XComCoordinate


def get_xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """The value of one XCom, found in the store alone and verified (see
    :meth:`xcomstash.Engine.get_stored` for what is and is not checked without the row)::

        from xcomstash.airflow.reading import get_xcom
        frame = get_xcom("etl", "manual__2026-01-01T00:00:00+00:00", "load")
    """
    from xcomstash.airflow.settings import engine

    return engine().get_stored(XComCoordinate(dag_id, run_id, task_id, map_index, key))
