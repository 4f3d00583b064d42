"""S3 endpoints from Airflow connections must use TLS; plain HTTP only when allowed, and only
to this machine. Checked where the adapter builds the client (no request is sent), in one child
process (Airflow reads ``AIRFLOW__*`` and ``AIRFLOW_CONN_*`` variables at each lookup)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness.airflow import clean_environ

pytestmark = pytest.mark.airflow

CASES = [
    ("https://s3.example.com", None),
    ("http://127.0.0.1:8333", None),
    ("http://127.0.0.1:8333", "True"),
    ("http://10.1.2.3:9000", "True"),
]

CHILD = """
import json, os, sys
from xcomstash.airflow.settings import s3_client_from_connection
from xcomstash.errors import ConfigError
out = []
for endpoint, allow in json.loads(sys.argv[1]):
    os.environ["AIRFLOW_CONN_XCS_TLS"] = json.dumps(
        {"conn_type": "aws", "login": "k", "password": "s", "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    )
    os.environ.pop("AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS", None)
    if allow is not None:
        os.environ["AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS"] = allow
    try:
        client = s3_client_from_connection("xcs_tls")
    except ConfigError as exc:
        out.append("REFUSED " + str(exc))
    else:
        out.append("ACCEPTED " + client.meta.endpoint_url)
print("XCS-TLS " + json.dumps(out))
"""


def test_tls_by_default_and_loopback_http_only_when_allowed(tmp_path) -> None:
    env = clean_environ()
    env["AIRFLOW_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(CASES)], env=env, capture_output=True, text=True, timeout=180
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("XCS-TLS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    https, plain, allowed, remote = json.loads(lines[-1][len("XCS-TLS ") :])
    assert https.startswith("ACCEPTED")
    assert plain.startswith("REFUSED") and "allow_http_endpoints" in plain
    assert allowed.startswith("ACCEPTED")
    assert remote.startswith("REFUSED") and "not this machine" in remote
