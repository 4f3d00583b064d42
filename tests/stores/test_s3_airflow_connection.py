"""S3 credentials from an Airflow AWS connection (``AIRFLOW_CONN_<ID>``), the way workers get them.

Airflow is imported in a child process: its configuration is read once per process from
``AIRFLOW_HOME``, so importing it here would pin this whole test session to one home.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.s3

RESULT_MARKER = "XCOMSTASH-TEST-RESULT "

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from xcomstash.airflow.connections import client_for
    from xcomstash.config import StashConfig
    from xcomstash.coordinate import XComCoordinate
    from xcomstash.engine import Engine
    from xcomstash.errors import ConfigError, StoreError
    from xcomstash.stores import open_store

    prefix = sys.argv[1]
    result = {}

    # 1. The store, opened from a URL naming the connection.
    store = open_store(f"s3://my_s3@xcom/{prefix}", clients=client_for)
    result["root_uri"] = store.root_uri
    result["endpoint"] = store.client.meta.endpoint_url
    with store.writer("conn/value.xcs") as f:
        f.write(b"written with connection credentials")
    result["got"] = store.get("conn/value.xcs").decode()
    result["listed"] = [i.key for i in store.list()]

    # 2. The engine, with the same factory the Airflow adapter uses.
    engine = Engine(
        StashConfig(store_url=f"s3://my_s3@xcom/{prefix}/engine", threshold=0),
        clients=client_for,
    )
    coordinate = XComCoordinate("conn_dag", "run", "task", -1, "return_value")
    stored = engine.serialize(np.arange(12).reshape(3, 4), coordinate)
    result["uri"] = stored["uri"]
    result["array"] = engine.deserialize(stored, coordinate).tolist()
    # 2b. `xcomstash inspect` on the URI the reference (and the Airflow UI) shows.
    import contextlib, io
    from xcomstash.cli import main as cli_main
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli_main(["inspect", stored["uri"], "--store-url", f"s3://my_s3@xcom/{prefix}/engine", "--json"])
    result["inspect"] = [code, json.loads(buffer.getvalue())]

    # 3. A connection with a wrong secret is refused by the server, on a read and on an upload,
    #    and the error says the credentials were refused.
    bad = open_store(f"s3://bad_s3@xcom/{prefix}", clients=client_for)
    def failure(action):
        try:
            action()
        except (StoreError, ConfigError) as exc:
            return [type(exc).__name__, str(exc)]
        return None
    result["bad"] = failure(lambda: bad.get("conn/value.xcs"))
    def upload():
        with bad.writer("conn/other.xcs") as f:
            f.write(b"x")
    result["bad_upload"] = failure(upload)
    # 4. A connection that does not exist is named as missing; the default one, undefined and
    #    with no credentials in the environment, says so.
    result["missing"] = failure(lambda: open_store(f"s3://no_such_conn@xcom/{prefix}", clients=client_for))
    result["no_default"] = failure(lambda: open_store(f"s3://xcom/{prefix}", clients=client_for).get("k"))

    print("%s" + json.dumps(result))
    """
    % RESULT_MARKER
)


def test_store_and_engine_use_airflow_connection_and_name_credential_problems(
    s3_server, s3_client, s3_prefix: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = {
        "conn_type": "aws",
        "login": s3_server.access_key,
        "password": s3_server.secret_key,
        "extra": {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW_CONN_MY_S3", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_CONN_BAD_S3", json.dumps({**conn, "password": "wrong-secret"}))
    # SeaweedFS serves plain HTTP on 127.0.0.1; xcomstash requires TLS unless this allows loopback.
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__ALLOW_HTTP_ENDPOINTS", "True")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # The connection must be the only source of credentials and endpoint.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AWS_PROFILE", "AWS_CONN_AWS_DEFAULT", "AIRFLOW_CONN_AWS_DEFAULT"):
        monkeypatch.delenv(name, raising=False)

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, s3_prefix],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
    assert proc.returncode == 0 and lines, (
        f"child failed (exit {proc.returncode})\nstdout:\n{proc.stdout[-3000:]}\n"
        f"stderr:\n{proc.stderr[-5000:]}"
    )
    result = json.loads(lines[-1][len(RESULT_MARKER) :])

    assert result["root_uri"] == f"s3://xcom/{s3_prefix}"  # the conn id is not part of the URI
    assert result["endpoint"] == s3_server.endpoint_url
    assert result["got"] == "written with connection credentials"
    assert result["listed"] == ["conn/value.xcs"]
    assert result["uri"].startswith(f"s3://xcom/{s3_prefix}/engine/conn_dag/run/.blobs/")
    assert result["array"] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    code, described = result["inspect"]
    assert code == 0 and described["object"] == result["uri"] and described["codec"] == "numpy.npy"
    assert described["xcom"]["dag_id"] == "conn_dag" and described["digest"]
    for case in ("bad", "bad_upload"):
        assert result[case] is not None, f"a wrong secret was accepted ({case})"
        name, message = result[case]
        assert name == "StoreUnavailableError" and "refused the credentials" in message, result[case]
    name, message = result["missing"]
    assert name == "ConfigError" and "'no_such_conn'" in message and "not defined" in message, result["missing"]
    name, message = result["no_default"]
    assert name == "StoreUnavailableError" and "no S3 credentials" in message and "aws_default" in message, result["no_default"]

    # What the child wrote is really in the server, where the URL said.
    body = s3_client.get_object(Bucket="xcom", Key=f"{s3_prefix}/conn/value.xcs")["Body"].read()
    assert body == b"written with connection credentials"
