"""S3 endpoints from Airflow connections must use TLS; plain HTTP only when allowed, and only
to this machine. Checked where the adapter builds the client (no request is sent)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.airflow.harness import clean_environ

pytestmark = pytest.mark.airflow

CHILD = """
import sys
from xcomstash.airflow.settings import s3_client_from_connection
from xcomstash.errors import ConfigError
try:
    client = s3_client_from_connection("xcs_tls")
except ConfigError as exc:
    print("REFUSED", exc)
else:
    print("ACCEPTED", client.meta.endpoint_url)
"""


def run(tmp_path, endpoint: str, allow: str | None) -> str:
    env = clean_environ()
    env.update(
        AIRFLOW_HOME=str(tmp_path / "home"),
        AIRFLOW_CONN_XCS_TLS=json.dumps(
            {"conn_type": "aws", "login": "k", "password": "s", "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        ),
    )
    if allow is not None:
        env["AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS"] = allow
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_tls_by_default_and_loopback_http_only_when_allowed(tmp_path) -> None:
    assert run(tmp_path, "https://s3.example.com", None).startswith("ACCEPTED")
    refused = run(tmp_path, "http://127.0.0.1:8333", None)
    assert refused.startswith("REFUSED") and "allow_http_endpoints" in refused
    assert run(tmp_path, "http://127.0.0.1:8333", "True").startswith("ACCEPTED")
    assert "not this machine" in run(tmp_path, "http://10.1.2.3:9000", "True")
