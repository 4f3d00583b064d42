"""The sensitive-data leaks found on a real deployment, replayed in real Airflow (``airflow
dags test`` on SQLite, local store): with ``sensitive_data = reject`` a raw AWS secret access
key in free text, a Fernet key under ``fernet_key`` and a password under ``pwd`` (as JSON
values and in a DataFrame) fail their task and nothing is stored; with ``mask`` they are
stored as ``***``. In neither case does a secret reach the xcom table, the store or a log."""

from __future__ import annotations

import json

import pytest

from tests.harness.airflow import AirflowEnv, DagRunResult, raised_exceptions

pytestmark = pytest.mark.airflow

DAG = "xcs_sensitive_leaks"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FERNET_KEY = "HOArt6GWgz4M31wZdhLnenKpZAPO7LGiDyRpCpL_HnY="
PASSWORD = "Tr0ub4dor&3-ops"
SECRETS = (AWS_SECRET, FERNET_KEY, PASSWORD)
LEAKING = ("aws_note", "fernet", "pwd", "table")


@pytest.fixture(scope="module")
def env(make_airflow_env) -> AirflowEnv:
    return make_airflow_env("sensitive_leaks", dags=["xcs_sensitive_leaks.py"])


def no_secret_anywhere(env: AirflowEnv, run: DagRunResult) -> None:
    text = run.output + "".join(run.task_log(t) for t in (*LEAKING, "consume"))
    text += json.dumps([row.value for row in env.xcom_rows(DAG, run.run_id)], default=str)
    stored = b"".join((env.store / rel).read_bytes() for rel in env.store_objects())
    for secret in SECRETS:
        assert secret not in text
        assert secret.encode() not in stored


def test_leaks_are_rejected_under_reject_and_masked_under_mask(env) -> None:
    reject = env.dags_test(DAG, logical_date="2026-12-01T00:00:00+00:00", env={"AIRFLOW__XCOMSTASH__SENSITIVE_DATA": "reject"})
    expected = {
        "aws_note": "aws-secret-access-key at $.note",
        "fernet": "sensitive-field at $.fernet_key",  # Airflow's own sensitive setting names are fields
        "pwd": "sensitive-field at $.pwd",
        "table": "aws-secret-access-key at column 'note' row 0",
    }
    for task_id, finding in expected.items():
        log = reject.task_log(task_id)
        assert reject.task_state(task_id) == "failed", f"{task_id}: {reject.task_state(task_id)}\n{log[-3000:]}"
        name, message = raised_exceptions(log)[-1]
        assert name == "xcomstash.errors.SensitiveDataError" and finding in message, (task_id, message)
        assert env.xcom_rows(DAG, reject.run_id, task_id) == []
    table_message = raised_exceptions(reject.task_log("table"))[-1][1]
    assert "sensitive-field at column 'fernet_key'" in table_message and "sensitive-field at column 'pwd'" in table_message
    no_secret_anywhere(env, reject)

    mask = env.dags_test(DAG, logical_date="2026-12-02T00:00:00+00:00", env={"AIRFLOW__XCOMSTASH__SENSITIVE_DATA": "mask"})
    mask.assert_success()
    consumed = mask.task_log("consume")
    assert "{'note': 'rotated the deploy user; new secret access key *** (old one revoked)'}" in consumed
    assert "{'component': 'scheduler', 'fernet_key': '***'}" in consumed
    assert "{'host': 'db.internal', 'user': 'etl', 'pwd': '***'}" in consumed
    assert "{'note': 'new secret access key ***', 'fernet_key': '***', 'pwd': '***', 'n': 0}" in consumed
    no_secret_anywhere(env, mask)
