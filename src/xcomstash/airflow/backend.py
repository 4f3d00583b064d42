"""``XComStashBackend``: the class named in ``AIRFLOW__CORE__XCOM_BACKEND``.

Each method translates Airflow's call into one engine call. Runs in the task process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, NoReturn

from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.execution_time.comms import (
    GetXCom,
    GetXComSequenceSlice,
    SetXCom,
    XComResult,
    XComSequenceSliceResult,
)

from xcomstash.security.readers import Expected
from xcomstash.airflow import legacy
from xcomstash.airflow.settings import engine
from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import LegacyRowError, XComStashError
from xcomstash.format.reference import is_reference
from xcomstash.observe.events import OK, Event, outcome_of

log = logging.getLogger("xcomstash")


def _coordinate(dag_id: Any, run_id: Any, task_id: Any, map_index: Any, key: Any) -> XComCoordinate:
    return XComCoordinate(
        dag_id=str(dag_id or ""),
        run_id=str(run_id or ""),
        task_id=str(task_id or ""),
        map_index=-1 if map_index is None else int(map_index),
        key=str(key or BaseXCom.XCOM_RETURN_KEY),
    )


def _row_coordinate(row: Any) -> XComCoordinate | None:
    """The XCom an Airflow row object names by its own columns, or None if it lacks one."""
    fields = [getattr(row, name, None) for name in ("dag_id", "run_id", "task_id", "key")]
    if not all(isinstance(f, str) and f for f in fields):
        return None
    map_index = getattr(row, "map_index", -1)
    if map_index is not None and not isinstance(map_index, int):
        return None
    return _coordinate(fields[0], fields[1], fields[2], map_index, fields[3])


def _expected(
    dag_id: Any, run_id: Any, task_id: Any, map_index: Any, key: Any, include_prior_dates: bool
) -> Expected:
    """What a pull asked for (an earlier run's row may answer when prior dates are included)."""
    return Expected(
        dag_id=str(dag_id),
        run_id=None if include_prior_dates else str(run_id),
        task_id=str(task_id),
        map_index=None if map_index is None else int(map_index),
        key=str(key),
    )


def _own_run() -> Expected | None:
    from xcomstash.airflow.security_settings import current_actor

    actor = current_actor()
    return Expected(dag_id=actor.dag_id, run_id=actor.run_id) if actor is not None else None


class _Row:
    """The shape ``deserialize_value`` expects: an object with ``.value``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


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
    def deserialize_value(cls, result: Any, expected: Expected | None = None) -> Any:  # type: ignore[override]
        """``expected``: the XCom the caller asked for. Airflow's own bare calls (the lazy
        sequence of a mapped task's outputs, always of the reader's own run) give none: then
        the reference must at least belong to the running task's DAG run."""
        stored = result.value
        if is_reference(stored):
            return engine().deserialize(stored, expected=expected or _own_run())
        # Only a URL-shaped string can be a common.io row: other inline values cost one check.
        if isinstance(stored, str) and "://" in stored[:16]:
            if legacy.looks_legacy(stored):
                return _read_legacy(stored, expected or _own_run())
            if problem := legacy.unconfigured_row(stored, expected or _own_run()):
                _refuse_legacy(stored, expected or _own_run(), LegacyRowError(problem))
        return engine().deserialize(stored, expected=expected)  # inline: nothing to check it against

    @classmethod
    def deserialize_many(cls, stored_values: list[Any], expected: Expected | None = None) -> list[Any]:
        """Fan-in: legacy rows one by one, our references concurrently, order preserved."""
        if any(isinstance(v, str) and "://" in v[:16] for v in stored_values):  # maybe common.io rows
            return [cls.deserialize_value(_Row(v), expected) for v in stored_values]
        return engine().deserialize_many(stored_values, expected=expected or _own_run())

    # Reads name the XCom they asked for, so a reference copied into another row is caught.
    @classmethod
    def get_one(  # type: ignore[override]
        cls,
        *,
        key: str,
        dag_id: str,
        task_id: str,
        run_id: str,
        map_index: int | None = None,
        include_prior_dates: bool = False,
    ) -> Any | None:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        msg = SUPERVISOR_COMMS.send(
            GetXCom(
                key=key, dag_id=dag_id, task_id=task_id, run_id=run_id,
                map_index=map_index, include_prior_dates=include_prior_dates,
            )
        )
        if not isinstance(msg, XComResult):
            raise TypeError(f"Expected XComResult, received: {type(msg)} {msg}")
        if msg.value is None:
            return None
        return cls.deserialize_value(msg, _expected(dag_id, run_id, task_id, map_index, key, include_prior_dates))

    # Fan-in: BaseXCom deserializes a mapped task's values one by one; fetch them concurrently.
    @classmethod
    def get_all(  # type: ignore[override]
        cls, *, key: str, dag_id: str, task_id: str, run_id: str, include_prior_dates: bool = False
    ) -> Any:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        msg = SUPERVISOR_COMMS.send(
            GetXComSequenceSlice(
                key=key, dag_id=dag_id, task_id=task_id, run_id=run_id,
                start=None, stop=None, step=None, include_prior_dates=include_prior_dates,
            )
        )
        if not isinstance(msg, XComSequenceSliceResult):
            raise TypeError(f"Expected XComSequenceSliceResult, received: {type(msg)} {msg}")
        if not msg.root:
            return None
        return cls.deserialize_many(list(msg.root), _expected(dag_id, run_id, task_id, None, key, include_prior_dates))

    # Async: the same as BaseXCom, but storage I/O runs in a thread, off the event loop.
    @classmethod
    async def aset(  # type: ignore[override]
        cls,
        key: str,
        value: Any,
        *,
        dag_id: str,
        task_id: str,
        run_id: str,
        map_index: int = -1,
        dag_result: bool = False,
        _mapped_length: int | None = None,
    ) -> None:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        stored = await asyncio.to_thread(
            cls.serialize_value,
            value=value, key=key, task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index,
        )
        await SUPERVISOR_COMMS.asend(
            SetXCom(
                key=key, value=stored, dag_id=dag_id, task_id=task_id, run_id=run_id,
                map_index=map_index, dag_result=dag_result, mapped_length=_mapped_length,
            )
        )

    @classmethod
    async def aget_one(  # type: ignore[override]
        cls,
        *,
        key: str,
        dag_id: str,
        task_id: str,
        run_id: str,
        map_index: int | None = None,
        include_prior_dates: bool = False,
    ) -> Any | None:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        msg = await SUPERVISOR_COMMS.asend(
            GetXCom(
                key=key, dag_id=dag_id, task_id=task_id, run_id=run_id,
                map_index=map_index, include_prior_dates=include_prior_dates,
            )
        )
        if not isinstance(msg, XComResult):
            raise TypeError(f"Expected XComResult, received: {type(msg)} {msg}")
        if msg.value is None:
            return None
        expected = _expected(dag_id, run_id, task_id, map_index, key, include_prior_dates)
        return await asyncio.to_thread(cls.deserialize_value, msg, expected)

    @classmethod
    async def aget_all(  # type: ignore[override]
        cls, *, key: str, dag_id: str, task_id: str, run_id: str, include_prior_dates: bool = False
    ) -> Any:
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        msg = await SUPERVISOR_COMMS.asend(
            GetXComSequenceSlice(
                key=key, dag_id=dag_id, task_id=task_id, run_id=run_id,
                start=None, stop=None, step=None, include_prior_dates=include_prior_dates,
            )
        )
        if not isinstance(msg, XComSequenceSliceResult):
            raise TypeError(f"Expected XComSequenceSliceResult, received: {type(msg)} {msg}")
        if not msg.root:
            return None
        expected = _expected(dag_id, run_id, task_id, None, key, include_prior_dates)
        return await asyncio.to_thread(cls.deserialize_many, list(msg.root), expected)

    @classmethod
    def delete(  # type: ignore[override]
        cls, key: str, task_id: str, dag_id: str, run_id: str, map_index: int | None = None
    ) -> None:
        """BaseXCom.delete, except that purge learns which XCom it purges: a shared blob is
        kept alive by links named after XComs, and only this XCom's link may go."""
        from airflow.sdk.execution_time.comms import DeleteXCom
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        row = cls._get_xcom_db_ref(
            key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index
        )
        cls._purge(row, _coordinate(dag_id, run_id, task_id, map_index, key))
        SUPERVISOR_COMMS.send(
            DeleteXCom(key=key, dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index)
        )

    @classmethod
    def purge(cls, xcom: Any, *args: Any) -> None:  # type: ignore[override]
        """Airflow's purge hook, given a row. The XCom it purges comes from the row's own
        columns (``XComModel`` rows carry dag_id, run_id, task_id, map_index and key), never
        from the reference inside it. A row that does not name its XCom (Airflow's bare
        ``XComResult`` carries only key and value) is not purged: a warning says so and the
        objects are left to ``xcomstash reconcile``. Not an exception, so Airflow's own
        delete and clear, which call this before deleting the row, keep working."""
        coordinate = _row_coordinate(xcom)
        if coordinate is None and not legacy.looks_legacy(getattr(xcom, "value", None)):
            if is_reference(getattr(xcom, "value", None)):
                log.warning(
                    "xcomstash: not purging a row that does not say which XCom it is (%s); "
                    "its object is left to 'xcomstash reconcile'", type(xcom).__name__,
                )
            return
        cls._purge(xcom, coordinate)

    @classmethod
    def _purge(cls, xcom: Any, coordinate: XComCoordinate | None) -> None:  # None: legacy rows only
        stored = getattr(xcom, "value", None)
        if legacy.looks_legacy(stored):
            _purge_legacy(stored, coordinate)
            return
        engine().purge(stored, coordinate)


def _read_legacy(stored: str, expected: Expected | None) -> Any:
    """A common.io row: the same checks and the same audit event as any pull."""
    return _legacy_op("pull", stored, expected, legacy.read)


def _refuse_legacy(stored: str, expected: Expected | None, error: XComStashError) -> NoReturn:
    """A common.io row this configuration cannot read: audited as a failed pull, raised."""
    xcom = {k: v for k, v in vars(expected).items() if v is not None} if expected is not None else {}
    engine().observer.emit(Event("pull", outcome_of(error), xcom, uri=stored[:300], source="common.io", error=error))
    raise error


def _purge_legacy(stored: str, coordinate: XComCoordinate | None) -> None:
    """Delete a common.io row's object only when the row passes the checks of a read: a
    forged row never deletes anything (it is logged and skipped, and the row goes)."""
    expected = Expected(**coordinate.as_dict()) if coordinate is not None else None
    try:
        _legacy_op("purge", stored, expected, legacy.purge)
    except XComStashError as exc:
        log.warning("xcomstash: not deleting the object of common.io row %r: %s", stored[:300], exc)


def _legacy_op(op: str, stored: str, expected: Expected | None, act: Callable[[Any], Any]) -> Any:
    eng = engine()
    xcom = {k: v for k, v in vars(expected).items() if v is not None} if expected is not None else {}
    started = time.perf_counter()
    try:
        row = legacy.parse(stored)
        assert row is not None
        result = act(legacy.admit(row, eng.guard, expected))
    except XComStashError as exc:
        eng.observer.emit(Event(op, outcome_of(exc), xcom, uri=stored[:300], source="common.io", error=exc))
        raise
    eng.observer.emit(Event(op, OK, xcom, uri=stored[:300], source="common.io", seconds=time.perf_counter() - started))
    return result
