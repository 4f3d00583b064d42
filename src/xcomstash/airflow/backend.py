"""``XComStashBackend``: the class named in ``AIRFLOW__CORE__XCOM_BACKEND``.

Each method translates Airflow's call into one engine call. Runs in the task process.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.xcom import BaseXCom

from xcomstash.airflow import legacy
from xcomstash.airflow.settings import engine
from xcomstash.coordinate import XComCoordinate


def _coordinate(dag_id: Any, run_id: Any, task_id: Any, map_index: Any, key: Any) -> XComCoordinate:
    return XComCoordinate(
        dag_id=str(dag_id or ""),
        run_id=str(run_id or ""),
        task_id=str(task_id or ""),
        map_index=-1 if map_index is None else int(map_index),
        key=str(key or BaseXCom.XCOM_RETURN_KEY),
    )


class XComStashBackend(BaseXCom):
    """Offloads large values to the configured store; small values stay inline as in BaseXCom."""

    @classmethod
    def serialize_value(  # type: ignore[override]
        cls,
        value: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
    ) -> Any:
        return engine().serialize(value, _coordinate(dag_id, run_id, task_id, map_index, key))

    @classmethod
    def store_value(cls, coordinate: Any, key: str, value: Any) -> Any:
        """The newer Airflow hook: same as :meth:`serialize_value`, coordinate given as an object."""
        return engine().serialize(
            value,
            _coordinate(
                getattr(coordinate, "dag_id", None),
                getattr(coordinate, "run_id", None),
                getattr(coordinate, "task_id", None),
                getattr(coordinate, "map_index", None),
                key,
            ),
        )

    @classmethod
    def deserialize_value(cls, result: Any) -> Any:  # type: ignore[override]
        stored = result.value
        path = legacy.legacy_path(stored)
        if path is not None:
            return legacy.read(path)
        return engine().deserialize(stored)

    @classmethod
    def purge(cls, xcom: Any, *args: Any) -> None:  # type: ignore[override]
        stored = getattr(xcom, "value", None)
        path = legacy.legacy_path(stored)
        if path is not None:
            legacy.purge(path)
            return
        engine().purge(stored)
