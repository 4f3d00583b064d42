"""Operator extra links in exclusive mode (tests/airflow/test_extra_links.py).

- ``trigger``: Airflow's TriggerDagRunOperator. It pushes its link through the XCom backend as
  soon as it has triggered the run, then waits for that run to finish (the test finishes it
  through the REST API), and only then does Airflow write the link again, directly, when the
  task ends: while it waits, the UI's "Triggered DAG" link is what the backend wrote.
- ``runbook``: an operator with a link of its own (written by Airflow when the task ends).
- ``check_links``: pulls the trigger's link through the backend, and tries to push what may
  not stay in a ``_link_`` row.
"""

from __future__ import annotations

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseOperator, BaseOperatorLink, dag, get_current_context, task

DOCS_URL = "https://docs.example.com/runbooks/xcs_links?step=2"
TRIGGERED_RUN_ID = "xcs_links_triggered"


class RunbookLink(BaseOperatorLink):
    name = "Runbook"

    def get_link(self, operator, *, ti_key) -> str:
        return DOCS_URL


class WithRunbook(BaseOperator):
    operator_extra_links = (RunbookLink(),)

    def execute(self, context):
        return "done"


@dag(dag_id="xcs_links_target", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_links_target():
    @task
    def noop() -> None:
        return None

    noop()


@dag(dag_id="xcs_links", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_links():
    trigger = TriggerDagRunOperator(
        task_id="trigger", trigger_dag_id="xcs_links_target", trigger_run_id=TRIGGERED_RUN_ID,
        wait_for_completion=True, poke_interval=1,
    )
    runbook = WithRunbook(task_id="runbook")

    @task
    def check_links() -> None:
        from xcomstash.errors import ExtraLinkValueError

        ti = get_current_context()["ti"]
        url = ti.xcom_pull(task_ids="trigger", key="_link_TriggerDagRunLink")
        print(f"XCS-LINK-PULLED {url}")
        for name, value in (("big", "https://x/" + "a" * 10_000), ("binary", b"\x00\x01")):
            try:
                ti.xcom_push(key=f"_link_{name}", value=value)
            except ExtraLinkValueError as exc:
                print(f"XCS-LINK-REFUSED {name} {type(exc).__name__}")
            else:
                print(f"XCS-LINK-ACCEPTED {name}")

    [trigger, runbook] >> check_links()


xcs_links_target()
xcs_links()
