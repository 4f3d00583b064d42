"""The xcom table, read and changed where the metadata database is reachable.

:class:`DatabaseRows` uses Airflow's own ORM models and its configured database connection
(``[database] sql_alchemy_conn``), so it runs on the scheduler or API-server host.
:class:`RestRows` reads the same rows through Airflow's public REST API (``/api/v2``) for
deployments where only the API is reachable: the list endpoint does not return values, so it
lists entries page by page and fetches each value (raw, not deserialized) concurrently.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import XComStashError
from xcomstash.maintenance.rows import RowFilter, XComRow
from xcomstash.format.reference import MARKER

#: Rows fetched per round trip when streaming the xcom table.
BATCH = 5000


class RowSourceError(XComStashError):
    """The xcom rows could not be read or changed (database or REST API failure)."""


def _like_pattern(glob: str) -> str:
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


class DatabaseRows:
    """Rows of the xcom table through ``airflow.models.xcom.XComModel``."""

    #: One SELECT sees one consistent state of the table.
    snapshot = True

    def __init__(self) -> None:
        from airflow import settings

        if getattr(settings, "Session", None) is None or not callable(settings.Session):
            settings.configure_orm()

    @staticmethod
    def _statement(selection: RowFilter) -> Any:
        from airflow.models.xcom import XComModel
        from sqlalchemy import Text, cast, select

        stmt = select(
            XComModel.dag_id,
            XComModel.run_id,
            XComModel.task_id,
            XComModel.map_index,
            XComModel.key,
            XComModel.value,
            XComModel.timestamp,
        )
        if selection.references_only:
            stmt = stmt.where(cast(XComModel.value, Text).like(f"%{_like_pattern(MARKER)}%", escape="\\"))
        if selection.dag_pattern:
            if any(c in selection.dag_pattern for c in "*?"):
                stmt = stmt.where(XComModel.dag_id.like(_like_pattern(selection.dag_pattern), escape="\\"))
            else:
                stmt = stmt.where(XComModel.dag_id == selection.dag_pattern)
        if selection.run_id:
            stmt = stmt.where(XComModel.run_id == selection.run_id)
        if selection.before is not None:
            stmt = stmt.where(XComModel.timestamp < selection.before)
        if selection.after is not None:
            stmt = stmt.where(XComModel.timestamp >= selection.after)
        return stmt

    def iter_rows(self, selection: RowFilter = RowFilter()) -> Iterator[XComRow]:
        """One streamed SELECT (one consistent snapshot on PostgreSQL and SQLite)."""
        from airflow.utils.session import create_session

        stmt = self._statement(selection).execution_options(yield_per=BATCH)
        with create_session(scoped=False) as session:
            for dag_id, run_id, task_id, map_index, key, value, ts in session.execute(stmt):
                yield XComRow(XComCoordinate(dag_id, run_id, task_id, int(map_index), key), value, ts)

    def get_value(self, coordinate: XComCoordinate) -> tuple[bool, Any]:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session(scoped=False) as session:
            found = session.execute(
                select(XComModel.value).where(
                    XComModel.dag_id == coordinate.dag_id,
                    XComModel.run_id == coordinate.run_id,
                    XComModel.task_id == coordinate.task_id,
                    XComModel.map_index == coordinate.map_index,
                    XComModel.key == coordinate.key,
                )
            ).first()
        return (found is not None, found[0] if found is not None else None)

    def replace_value(self, coordinate: XComCoordinate, expected: Any, new_value: Any) -> bool:
        """Set one row's value if it still holds ``expected`` (compare-and-set, so a row a task
        rewrote meanwhile is left alone). True if the row was changed.

        The row is locked with ``SELECT value ... FOR UPDATE`` on the xcom table alone: selecting
        the ``XComModel`` entity would eager-load its relationships through outer joins, which
        PostgreSQL refuses to lock ("FOR UPDATE cannot be applied to the nullable side of an
        outer join"). SQLite has no row locks; its write transaction serialises the update."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select, update

        where = (
            XComModel.dag_id == coordinate.dag_id,
            XComModel.run_id == coordinate.run_id,
            XComModel.task_id == coordinate.task_id,
            XComModel.map_index == coordinate.map_index,
            XComModel.key == coordinate.key,
        )
        with create_session(scoped=False) as session:
            found = session.execute(
                select(XComModel.value).where(*where).with_for_update(of=XComModel.__table__)
            ).first()
            if found is None or not _same_value(found[0], expected):
                session.rollback()
                return False
            result = session.execute(
                update(XComModel).where(*where).values(value=new_value).execution_options(synchronize_session=False)
            )
            if (result.rowcount or 0) != 1:
                session.rollback()
                return False
            session.commit()
        return True

    def run_states(
        self, runs: Iterable[tuple[str, str]] | None = None, *, only_states: Iterable[str] | None = None
    ) -> dict[tuple[str, str], str]:
        """``{(dag_id, run_id): state}`` of the given DAG runs (all runs when ``None``), read
        now; with ``only_states``, only runs in one of those states.

        Maintenance that rewrites objects (re-wrap, re-encrypt) leaves alone the runs that are
        queued or running: a task of such a run may be writing the same object right now."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select, tuple_

        stmt = select(DagRun.dag_id, DagRun.run_id, DagRun.state)
        if only_states is not None:
            stmt = stmt.where(DagRun.state.in_(sorted(only_states)))
        wanted = None if runs is None else sorted(set(runs))
        out: dict[tuple[str, str], str] = {}
        with create_session(scoped=False) as session:
            if wanted is None:
                chunks: list[Any] = [stmt]
            else:
                chunks = [
                    stmt.where(tuple_(DagRun.dag_id, DagRun.run_id).in_(wanted[i : i + 500]))
                    for i in range(0, len(wanted), 500)
                ]
            for chunk in chunks:
                for dag_id, run_id, state in session.execute(chunk):
                    out[(dag_id, run_id)] = str(getattr(state, "value", state)) if state is not None else ""
        return out

    def delete_rows(self, coordinates: Iterable[XComCoordinate]) -> int:
        """Delete these xcom rows through the ORM, in one transaction."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        done = 0
        with create_session(scoped=False) as session:
            for c in coordinates:
                result = session.execute(
                    delete(XComModel).where(
                        XComModel.dag_id == c.dag_id,
                        XComModel.run_id == c.run_id,
                        XComModel.task_id == c.task_id,
                        XComModel.map_index == c.map_index,
                        XComModel.key == c.key,
                    )
                )
                done += result.rowcount or 0
            session.commit()
        return done

    def delete_run_xcoms(self, dag_id: str, run_id: str) -> int:
        """Delete every xcom row of one DAG run through the ORM (one transaction)."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        with create_session(scoped=False) as session:
            result = session.execute(
                delete(XComModel).where(XComModel.dag_id == dag_id, XComModel.run_id == run_id)
            )
            session.commit()
        return result.rowcount or 0

    def runs(self, dag_pattern: str | None = None) -> list[dict[str, Any]]:
        """DAG runs that have xcom rows: dag_id, run_id, state, run_after (newest first per DAG)."""
        from airflow.models.dagrun import DagRun
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        stmt = (
            select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.run_after)
            .where(
                select(XComModel.dag_run_id).where(XComModel.dag_run_id == DagRun.id).exists()
            )
            .order_by(DagRun.dag_id, DagRun.run_after.desc(), DagRun.id.desc())
        )
        if dag_pattern and any(c in dag_pattern for c in "*?"):
            stmt = stmt.where(DagRun.dag_id.like(_like_pattern(dag_pattern), escape="\\"))
        elif dag_pattern:
            stmt = stmt.where(DagRun.dag_id == dag_pattern)
        with create_session(scoped=False) as session:
            return [
                {"dag_id": d, "run_id": r, "state": str(s) if s is not None else None, "run_after": a}
                for d, r, s, a in session.execute(stmt)
            ]


def _same_value(stored: Any, expected: Any) -> bool:
    """Whether a row still holds what was read earlier: the JSON column may come back as text
    (SQLite, rows written as JSON text) or decoded (PostgreSQL's JSON type), so both sides are
    compared as JSON data."""
    return _as_json(stored) == _as_json(expected)


def _as_json(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode()
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class RestRows:
    """Rows of the xcom table through Airflow's REST API (``GET .../xcomEntries``).

    Offset pagination is not a snapshot: a row deleted on an earlier page while we list shifts
    later rows back, and one may be skipped. Reconcile therefore confirms every candidate
    against its own XCom entry before deleting it (``snapshot = False``).
    """

    snapshot = False

    PAGE = 100
    WORKERS = 8

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        if not self.base.endswith("/api/v2"):
            self.base += "/api/v2"
        self.token = token
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise RowSourceError(f"Airflow API {url} answered {exc.code}: {exc.read()[:300]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RowSourceError(f"Airflow API {url} unreachable: {exc}") from None

    @staticmethod
    def _entry_path(dag_id: str, run_id: str, task_id: str, key: str | None = None) -> str:
        q = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
        path = f"/dags/{q(dag_id)}/dagRuns/{q(run_id)}/taskInstances/{q(task_id)}/xcomEntries"
        return path if key is None else f"{path}/{q(key)}"

    def _entries(self, selection: RowFilter) -> Iterator[dict[str, Any]]:
        dag = selection.dag_pattern if selection.dag_pattern and not any(c in selection.dag_pattern for c in "*?") else "~"
        offset = 0
        while True:
            page = self._get(
                self._entry_path(dag, selection.run_id or "~", "~"),
                {"limit": self.PAGE, "offset": offset},
            )
            entries = (page or {}).get("xcom_entries") or []
            yield from entries
            if len(entries) < self.PAGE:
                return
            offset += len(entries)

    def _value(self, entry: dict[str, Any]) -> XComRow | None:
        found = self._get(
            self._entry_path(entry["dag_id"], entry["run_id"], entry["task_id"], entry["key"]),
            {"map_index": entry["map_index"], "deserialize": "false", "stringify": "false"},
        )
        if found is None:  # deleted between listing and fetching
            return None
        coordinate = XComCoordinate(entry["dag_id"], entry["run_id"], entry["task_id"], int(entry["map_index"]), entry["key"])
        ts = entry.get("timestamp")
        return XComRow(coordinate, found.get("value"), _parse_ts(ts))

    def iter_rows(self, selection: RowFilter = RowFilter()) -> Iterator[XComRow]:
        import fnmatch

        with ThreadPoolExecutor(self.WORKERS, thread_name_prefix="xcomstash-api") as pool:
            batch: list[dict[str, Any]] = []
            for entry in self._entries(selection):
                if selection.dag_pattern and not fnmatch.fnmatchcase(entry["dag_id"], selection.dag_pattern):
                    continue
                if selection.before is not None or selection.after is not None:
                    ts = _parse_ts(entry.get("timestamp"))
                    if ts is None or (selection.before is not None and ts >= selection.before) or (
                        selection.after is not None and ts < selection.after
                    ):
                        continue
                batch.append(entry)
                if len(batch) >= self.PAGE:
                    yield from (r for r in pool.map(self._value, batch) if r is not None)
                    batch = []
            yield from (r for r in pool.map(self._value, batch) if r is not None)

    def get_value(self, coordinate: XComCoordinate) -> tuple[bool, Any]:
        found = self._get(
            self._entry_path(coordinate.dag_id, coordinate.run_id, coordinate.task_id, coordinate.key),
            {"map_index": coordinate.map_index, "deserialize": "false", "stringify": "false"},
        )
        return (found is not None, None if found is None else found.get("value"))


def _parse_ts(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
