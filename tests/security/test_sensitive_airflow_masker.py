"""Airflow's secrets masker feeds the scan: what Airflow hides in its logs and UI (registered
secrets, its sensitive field names, its own sensitive settings such as ``fernet_key``) is what
the scan rejects or masks. Run in a fresh interpreter with its own ``AIRFLOW_HOME``, as a
worker would load it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.airflow

_PROBE = """
import json, sys
from airflow.sdk.log import mask_secret
from xcomstash.airflow.security_settings import masker_fields, masker_pattern
from xcomstash.security.sensitive import Scanner

fields = masker_fields()
scanner = Scanner(registered=masker_pattern, sensitive_fields=fields)
before = scanner.scan_structure({"note": "conn pw is Zq8-registered-in-task"})[0]
mask_secret("Zq8-registered-in-task")  # what Connection.get() does with a password
after = scanner.mask_structure({"note": "conn pw is Zq8-registered-in-task"})
named = scanner.mask_structure({"fernet_key": "not-random-but-named", "jwt_secret": "x-y-z", "sql_alchemy_conn": "sqlite:///a.db"})
print(json.dumps({
    "fields": sorted(fields),
    "before": [str(f) for f in before],
    "after": [after[0], [str(f) for f in after[1]]],
    "named": [named[0], sorted(f.detector for f in named[1])],
}))
"""


def test_airflow_masker_and_sensitive_settings_feed_the_scan(tmp_path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES": "vault_token_ref"}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("fernet_key", "secret_key", "jwt_secret", "sql_alchemy_conn", "password", "vault_token_ref"):
        assert name in result["fields"]
    assert not any(f.endswith("_kwargs") for f in result["fields"])
    assert result["before"] == []
    assert result["after"] == [{"note": "conn pw is ***"}, ["registered-secret at $.note"]]
    assert result["named"] == [{"fernet_key": "***", "jwt_secret": "***", "sql_alchemy_conn": "***"}, ["sensitive-field"] * 3]
