"""The plugin's FastAPI app, mounted by the API server at ``/xcomstash``: a JSON API and the
two HTML pages the Airflow UI shows in an iframe (the task instance tab and the overview).

Access goes through Airflow's auth manager, as for Airflow's own endpoints: the user comes
from the ``Authorization: Bearer`` header or, in the UI's iframe, from the ``_token`` cookie
the UI's login set (:func:`airflow.api_fastapi.core_api.security.get_user`); the XComs of a DAG
are shown only to a user the auth manager allows ``GET`` on that DAG's XComs
(:class:`DagAccessEntity.XCOM`). Anyone else gets 403 before any row or byte is read.

Values are read through the engine's pull path (:meth:`xcomstash.engine.Engine.preview`),
with every check a task's pull makes, audited as previews by the signed-in user. The
overview reads only the maintenance records and the newest audit objects
(:mod:`xcomstash.maintenance.records`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import lru_cache
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag

from xcomstash import pages
from xcomstash.coordinate import XComCoordinate
from xcomstash.errors import XComStashError
from xcomstash.format.reference import is_reference
from xcomstash.maintenance.rows import decode_value
from xcomstash.preview import PreviewLimits

log = logging.getLogger("xcomstash.airflow.ui")

#: XComs shown (each with a preview) per page of the tab.
PAGE_SIZE = 50

_can_read_xcoms = Depends(requires_access_dag("GET", DagAccessEntity.XCOM))


def _engine() -> Any:
    from xcomstash.airflow.settings import engine

    return engine()


def _limits() -> PreviewLimits:
    from xcomstash.airflow.settings import SECTION, _conf

    conf = _conf()
    return PreviewLimits(
        rows=conf.getint(SECTION, "preview_rows", fallback=20),
        whole_bytes=conf.getint(SECTION, "preview_max_whole_bytes", fallback=32 * 1024 * 1024),
    )


def _map_index(text: str | None) -> int | None:
    """The UI substitutes ``{MAP_INDEX}`` only on a mapped task instance's page; elsewhere
    the placeholder (or nothing) arrives: every map index is shown then."""
    if text is None or text.strip() in ("", "{MAP_INDEX}"):
        return None
    try:
        return int(text)
    except ValueError:
        raise HTTPException(422, f"map_index must be an integer, got {text[:50]!r}") from None


def _rows(dag_id: str, run_id: str, task_id: str, map_index: int | None, offset: int, limit: int) -> tuple[list[Any], int]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    where = [XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id]
    if map_index is not None:
        where.append(XComModel.map_index == map_index)
    with create_session(scoped=False) as session:
        total = session.scalar(select(func.count()).select_from(XComModel).where(*where)) or 0
        rows = session.execute(
            select(XComModel.map_index, XComModel.key, XComModel.value)
            .where(*where)
            # The return value first (what a task is about), then the other keys by name.
            .order_by(XComModel.map_index, XComModel.key != "return_value", XComModel.key)
            .offset(offset)
            .limit(limit)
        ).all()
    return [tuple(r) for r in rows], int(total)


def _stored(value: Any) -> Any:
    """A row's value as the backend is handed it: the JSON text of the column, decoded."""
    value = decode_value(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _user_actor(user: Any) -> dict[str, Any]:
    name = user.get_name() if hasattr(user, "get_name") else str(user)
    return {"user": name, "via": "airflow ui"}


def task_instance_doc(
    user: Any, dag_id: str, run_id: str, task_id: str, map_index: int | None, offset: int = 0, limit: int = PAGE_SIZE
) -> dict[str, Any]:
    from xcomstash.maintenance.records import last_verification

    engine = _engine()
    limits = _limits()
    actor = _user_actor(user)
    rows, total = _rows(dag_id, run_id, task_id, map_index, offset, limit)
    xcoms = []
    for index, key, raw in rows:
        coordinate = XComCoordinate(dag_id, run_id, task_id, int(index), key)
        stored = _stored(raw)
        entry: dict[str, Any] = {"key": key, "map_index": int(index)}
        try:
            result = engine.preview(stored, coordinate, limits, actor=actor)
        except XComStashError as exc:
            entry["error"] = _explain(exc)
            if is_reference(stored):
                entry["stored"] = {
                    "location": "store", "uri": str(stored.get("uri", ""))[:500], "size": stored.get("size"),
                    "codec": stored.get("codec"), "python_type": stored.get("type"),
                }
        except Exception as exc:  # one value's preview must not take the whole tab down
            log.exception("xcomstash: the preview of %s failed", coordinate)
            entry["error"] = f"Not previewed: {type(exc).__name__}: {str(exc)[:500]}"
        else:
            entry |= result.to_json()
        xcoms.append(entry)
    engine.flush()  # the previews' audit events: on storage before the page is shown
    uris = [x["stored"]["uri"] for x in xcoms if (x.get("stored") or {}).get("uri")]
    if uris:
        try:
            checked = last_verification(engine.store, uris)
        except Exception as exc:  # the records are a convenience: never fail the tab on them
            log.warning("xcomstash: could not read the verify records: %s", exc)
            checked = {}
        for x in xcoms:
            uri = (x.get("stored") or {}).get("uri")
            if uri in checked:
                x["verification"] = checked[uri]
    return {
        "task_instance": {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index},
        "xcoms": xcoms,
        "total": total,
        "offset": offset,
        "more": max(0, total - offset - len(rows)),
    }


def _explain(exc: XComStashError) -> str:
    from xcomstash.errors import AccessDeniedError, DecryptionError, KeyUnavailableError

    if isinstance(exc, KeyUnavailableError):
        return f"Not previewed: the value is encrypted and this API server holds no key for it ({exc})"
    if isinstance(exc, DecryptionError):
        return f"Not previewed: the value is encrypted and could not be decrypted here ({exc})"
    if isinstance(exc, AccessDeniedError):
        return f"Not previewed: the producer restricted who may read this value to tasks ({exc})"
    return f"Not previewed: {type(exc).__name__}: {exc}"


def _dag_visibility(user: Any) -> Callable[[str | None], bool]:
    """Whether ``user`` may read the XComs of a DAG (``None``: of every DAG), asked of the
    auth manager once per DAG."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    manager = get_auth_manager()

    @lru_cache(maxsize=4096)
    def visible(dag_id: str | None) -> bool:
        details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)) if dag_id else None
        return bool(
            manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.XCOM, details=details, user=user)
        )

    return visible


def overview_doc(user: Any) -> dict[str, Any]:
    from xcomstash.maintenance.records import overview

    from airflow.api_fastapi.app import get_auth_manager

    visible = _dag_visibility(user)
    doc = overview(_engine().store, visible=visible)
    # The checks name store URLs, keyset paths and settings: shown to those who may read
    # Airflow's configuration.
    if get_auth_manager().is_authorized_configuration(method="GET", user=user):
        doc["checks"] = _checks()
    return doc


#: ``xcomstash check`` results are reused this long: the checks probe every store location,
#: which a page load should not do each time.
CHECKS_TTL = 300.0
_checks_cache: tuple[float, list[dict[str, Any]]] | None = None
_checks_lock = threading.Lock()


def _checks() -> list[dict[str, Any]]:
    """``xcomstash check`` results of this host, at most :data:`CHECKS_TTL` seconds old."""
    global _checks_cache
    from xcomstash.airflow.preflight import checks_here

    with _checks_lock:
        if _checks_cache is not None and time.monotonic() - _checks_cache[0] < CHECKS_TTL:
            return _checks_cache[1]
        try:
            found = [
                {"name": c.name, "status": c.status, "detail": c.detail, "fix": getattr(c, "fix", "")}
                for c in checks_here()
            ]
        except Exception as exc:
            found = [{"name": "xcomstash check", "status": "fail", "detail": f"{type(exc).__name__}: {exc}", "fix": ""}]
        _checks_cache = (time.monotonic(), found)
        return found


# ------------------------------------------------------------------------------- the app


def create_app() -> FastAPI:
    app = FastAPI(
        title="xcomstash",
        description="XCom storage: previews of a task instance's XComs and the storage overview.",
    )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Any:
        if "/api/" in request.url.path:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        message = str(exc.detail)
        if exc.status_code == 403:
            dag_id = request.query_params.get("dag_id")
            message = f"You may not read the XComs of DAG {dag_id!r}." if dag_id else "Forbidden."
        elif exc.status_code == 401:
            message = "Not signed in: sign in to Airflow first."
        return HTMLResponse(pages.error_page(exc.status_code, message), status_code=exc.status_code)

    @app.get("/api/task-instance", dependencies=[_can_read_xcoms])
    def ti_api(
        user: GetUserDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str | None = None,
        offset: int = Query(0, ge=0),
        limit: int = Query(PAGE_SIZE, ge=1, le=500),
    ) -> dict[str, Any]:
        return task_instance_doc(user, dag_id, run_id, task_id, _map_index(map_index), offset, limit)

    @app.get("/task-instance", response_class=HTMLResponse, dependencies=[_can_read_xcoms])
    def ti_page(
        user: GetUserDep,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str | None = None,
        offset: int = Query(0, ge=0),
    ) -> HTMLResponse:
        doc = task_instance_doc(user, dag_id, run_id, task_id, _map_index(map_index), offset)
        return HTMLResponse(pages.task_instance_page(doc))

    @app.get("/api/overview")
    def overview_api(user: GetUserDep) -> dict[str, Any]:
        return overview_doc(user)

    @app.get("/overview", response_class=HTMLResponse)
    def overview_page(user: GetUserDep) -> HTMLResponse:
        return HTMLResponse(pages.overview_page(overview_doc(user)))

    return app
