"""The Airflow plugin (entry point ``airflow.plugins``): the XCom tab on the task instance page
and the XCom storage page under Browse, both served by the app of :mod:`xcomstash.airflow.ui`
mounted on the API server at ``/xcomstash``.

The UI puts an ``external_views`` entry in an iframe; for destination ``task_instance`` it
substitutes ``{DAG_ID}``, ``{RUN_ID}``, ``{TASK_ID}`` and (on a mapped instance's page)
``{MAP_INDEX}`` into the href. The iframe is same-origin, so the browser sends the UI's
``_token`` cookie and the app authenticates the user exactly as Airflow's own API does.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

#: Where the app is mounted on the API server.
URL_PREFIX = "/xcomstash"


def _app() -> object:
    from xcomstash.airflow.ui import create_app

    return create_app()


class XComStashPlugin(AirflowPlugin):
    name = "xcomstash"
    fastapi_apps = [{"app": _app(), "url_prefix": URL_PREFIX, "name": "xcomstash"}]
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
