"""DAG for the sensitive-data leak test: the values that went through ``sensitive_data =
reject`` on a real deployment, as task return values (a raw AWS secret access key in free
text, a Fernet key under ``fernet_key``, a password under ``pwd``, and the same in a
DataFrame's string columns). ``consume`` prints what it pulled, so an unmasked secret would
reach the task log."""

from __future__ import annotations

import pandas as pd
from airflow.sdk import dag, task

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
FERNET_KEY = "HOArt6GWgz4M31wZdhLnenKpZAPO7LGiDyRpCpL_HnY="
PASSWORD = "Tr0ub4dor&3-ops"


@dag(dag_id="xcs_sensitive_leaks", schedule=None, catchup=False, tags=["xcomstash-test"])
def xcs_sensitive_leaks():
    @task(show_return_value_in_logs=False)
    def aws_note():
        return {"note": f"rotated the deploy user; new secret access key {AWS_SECRET} (old one revoked)"}

    @task(show_return_value_in_logs=False)
    def fernet():
        return {"component": "scheduler", "fernet_key": FERNET_KEY}

    @task(show_return_value_in_logs=False)
    def pwd():
        return {"host": "db.internal", "user": "etl", "pwd": PASSWORD}

    @task(show_return_value_in_logs=False)
    def table():
        n = 3_000
        frame = pd.DataFrame({"note": ["nightly rotation ok"] * n, "fernet_key": [None] * n, "pwd": [None] * n, "n": range(n)})
        frame.loc[0, "note"] = f"new secret access key {AWS_SECRET}"
        frame.loc[0, "fernet_key"] = FERNET_KEY
        frame.loc[0, "pwd"] = PASSWORD
        return frame

    @task
    def consume(a: dict, b: dict, c: dict, t: pd.DataFrame) -> None:
        print(f"XCS-CONSUMED {a!r} {b!r} {c!r} {t.head(2).to_dict('records')!r}")

    consume(aws_note(), fernet(), pwd(), table())


xcs_sensitive_leaks()
