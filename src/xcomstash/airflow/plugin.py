"""The Airflow plugin (entry point ``airflow.plugins``): the XCom tab on the task instance page
and the XCom storage page under Browse, both served by the app of :mod:`xcomstash.airflow.ui`
mounted on the API server at ``/xcomstash``.

The UI puts an ``external_views`` entry in an iframe; for destination ``task_instance`` it
substitutes ``{DAG_ID}``, ``{RUN_ID}``, ``{TASK_ID}`` and (on a mapped instance's page)
``{MAP_INDEX}`` into the href. The iframe is same-origin, so the browser sends the UI's
``_token`` cookie and the app authenticates the user exactly as Airflow's own API does.

Every task process loads the plugins (for their macros), so this module stays cheap to
import: the app (FastAPI, Airflow's API security) is built only when the API server asks for
``fastapi_apps``.
"""

from __future__ import annotations

from typing import Any

from xcomstash.airflow.compat import plugin_base

#: The Task SDK's class where there is one (what a worker without airflow-core has); core's on 3.1.
AirflowPlugin = plugin_base()

#: Where the app is mounted on the API server.
URL_PREFIX = "/xcomstash"


class _FastAPIApps:
    """``fastapi_apps``, built on first access (only the API server reads it)."""

    _apps: list[dict[str, Any]] | None = None

    def __get__(self, instance: object, owner: type) -> list[dict[str, Any]]:
        if _FastAPIApps._apps is None:
            from xcomstash.airflow.ui import create_app

            _FastAPIApps._apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "xcomstash"}]
        return _FastAPIApps._apps


class XComStashPlugin(AirflowPlugin):
    name = "xcomstash"
    fastapi_apps = _FastAPIApps()  # type: ignore[assignment]
    external_views = [
        {
            "name": "XCom storage",
            "href": f"{URL_PREFIX}/task-instance?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}"
            "&map_index={MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "xcomstash",
        },
        {
            "name": "XCom storage",
            "href": f"{URL_PREFIX}/overview",
            "destination": "nav",
            "category": "browse",
            "url_route": "xcomstash-overview",
        },
    ]
