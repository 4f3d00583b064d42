"""Security in real Airflow (``airflow dags test`` on SQLite, local store):

- values are encrypted and their references signed under a keyset file made by
  ``xcomstash keys generate``;
- references forged or edited straight in the xcom table, hostile ones, and a signed one
  copied into another DAG's row are rejected inside the reading task, before the store;
- a restricted value is read by the task it names and refused to another;
- a dict holding a connection password and an AWS key is rejected, or masked, per policy,
  and neither secret shows up in the xcom row, the stored object or the task logs;
- rotation end to end: written under key 1, rotate, still readable, re-wrap, key 1 removed,
  still readable;
- the audit log (``xcomstash audit``) shows the pushes, pulls and denials.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.airflow import AirflowEnv, CommandResult, DagRunResult, raised_exceptions

pytestmark = pytest.mark.airflow

SOURCE, SINK, OTHER, SECRETS = "xcs_sec_source", "xcs_sec_sink", "xcs_sec_other_sink", "xcs_sec_secrets"
PASSWORD = "pg-Sup3r-s3cret-pw"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
CONN = {"conn_type": "postgres", "host": "db.internal", "login": "etl", "password": PASSWORD}


def cli(env: AirflowEnv, *args: str) -> CommandResult:
    return env.xcomstash(*args, timeout=120)


def failed_with(run: DagRunResult, task_id: str) -> tuple[str, str]:
    log = run.task_log(task_id)
    assert run.task_state(task_id) == "failed", f"{task_id}: {run.task_state(task_id)}\n{log[-3000:]}"
    assert "XCS-WRONG-VALUE" not in log, log[-3000:]
    raised = raised_exceptions(log)
    assert raised, f"{task_id} logged no exception:\n{log[-3000:]}"
    return raised[-1]


@pytest.fixture(scope="module")
def secured(make_airflow_env) -> dict[str, Any]:
    env = make_airflow_env("security", dags=["xcs_security.py"])
    keyfile = env.root / "keyset.json"
    made = cli(env, "keys", "generate", str(keyfile))
    assert made.returncode == 0, made.stderr
    env.config["AIRFLOW__XCOMSTASH__KEYSETS"] = f"file:{keyfile}"
    with env.one_process():  # the rows edited between the two runs are read fresh by the sink
        source = env.dags_test(SOURCE, logical_date="2026-02-01T00:00:00+00:00")
        refs = {r.key: r.value for r in env.xcom_rows(SOURCE, source.run_id, "produce")}

        # Edited: a genuine reference re-pointed at another genuine object. Forged: written without
        # the key. Hostile: outside the store. All three objects/URIs exist or are readable files.
        env.set_xcom_value(SOURCE, source.run_id, "produce", "edited", {**refs["edited"], "uri": refs["first"]["uri"], "digest": refs["first"]["digest"], "size": refs["first"]["size"]})
        forged = {k: v for k, v in refs["first"].items() if k != "mac"}
        env.set_xcom_value(SOURCE, source.run_id, "produce", "forged", {**forged, "xcom": refs["forged"]["xcom"]})
        env.set_xcom_value(SOURCE, source.run_id, "produce", "hostile", {**forged, "uri": "file:///etc/passwd"})
        sink = env.dags_test(
            SINK,
            logical_date="2026-02-02T00:00:00+00:00",
            conf={"source_run_id": source.run_id, "keys": ["first", "second", "edited", "forged", "hostile"]},
        )
    return {"env": env, "keyfile": keyfile, "source": source, "sink": sink, "refs": refs}


def test_values_are_stored_encrypted_with_signed_references(secured) -> None:
    env, source, refs = secured["env"], secured["source"], secured["refs"]
    assert source.task_state("produce") == "success", source.task_log("produce")[-3000:]
    keyset = json.loads(secured["keyfile"].read_text())
    for key in ("first", "second"):
        ref = refs[key]
        assert ref["mac"].startswith(keyset["primary"] + ":")
        head = env.object_path(ref).read_bytes()[:2000]
        assert b'"alg":"aes256gcm-stream-v2"' in head


def test_intact_values_are_read(secured) -> None:
    sink = secured["sink"]
    for key in ("first", "second"):
        assert sink.task_state(f"read_{key}") == "success", sink.task_log(f"read_{key}")[-3000:]


@pytest.mark.parametrize("key", ["edited", "forged", "hostile"])
def test_forged_edited_and_hostile_rows_fail_the_task_before_the_store(secured, key) -> None:
    name, message = failed_with(secured["sink"], f"read_{key}")
    assert name in ("xcomstash.errors.ReferenceSignatureError", "xcomstash.errors.InvalidReferenceError"), (name, message)
    assert "forged" in message or "not signed" in message or "outside" in message, message


def test_restricted_value_is_read_only_by_the_task_it_names(secured) -> None:
    source = secured["source"]
    assert source.task_state("read_allowed") == "success", source.task_log("read_allowed")[-3000:]
    name, message = failed_with(source, "read_denied")
    assert name == "xcomstash.errors.AccessDeniedError" and "read_denied" in message


def test_signed_reference_copied_into_another_dags_row_is_rejected(secured) -> None:
    env, refs = secured["env"], secured["refs"]
    with env.one_process():
        first = env.dags_test(OTHER, logical_date="2026-02-03T00:00:00+00:00")
        first.assert_success()
        env.set_xcom_value(OTHER, first.run_id, "own", "copied", refs["copied"])
        again = env.tasks_test(OTHER, "read_copied", first.run_id)
    log = again.output
    assert "XCS-WRONG-VALUE" not in log
    names = [n for n, _ in raised_exceptions(log)]
    assert "xcomstash.errors.ReferenceSignatureError" in names, log[-3000:]
    assert "copied into another XCom's row" in log


def test_audit_log_records_pushes_pulls_and_denials(secured) -> None:
    env = secured["env"]
    out = cli(env, "audit", "--json", "--dag", SOURCE)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    ops = {(e["op"], e["outcome"], e["xcom"]["key"]) for e in events}
    assert ("push", "ok", "first") in ops and ("pull", "ok", "first") in ops
    assert ("pull", "denied", "edited") in ops and ("pull", "denied", "forged") in ops
    denied = [e for e in events if e["outcome"] == "denied" and e["xcom"]["key"] == "forged"][0]
    assert denied["actor"]["dag_id"] == SINK and denied["actor"]["task_id"] == "read_forged"
    table = cli(env, "audit", "--dag", SOURCE, "--outcome", "denied")
    assert table.returncode == 0 and "denied" in table.stdout


def test_rotation_end_to_end(secured, make_airflow_env) -> None:
    env, keyfile, source = secured["env"], secured["keyfile"], secured["source"]
    old_key = json.loads(keyfile.read_text())["primary"]
    assert cli(env, "keys", "rotate", str(keyfile), "--promote-now").returncode == 0
    new_key = json.loads(keyfile.read_text())["primary"]
    conf = {"source_run_id": source.run_id, "keys": ["first", "second"]}
    # (Reads between each step of a rotation: tests/commands/test_rotation_airflow.py.)
    state = env.root / "rewrap-state.json"
    rewrap = cli(env, "keys", "rewrap", "--store-url", f"file://{env.store}", "--keysets", f"file:{keyfile}", "--state", str(state))
    summary = json.loads(rewrap.stdout[rewrap.stdout.index("{"):])
    assert summary["rewrapped"] >= 2 and summary["rewrapped_from"] == {old_key: summary["rewrapped"]}
    assert summary["failed"] == []
    # Every genuine reference was re-signed; the row the test edited is refused (its MAC is
    # wrong) and reported, which is what the non-zero exit says.
    assert summary["references_resigned"] >= 2
    # (and the genuine reference copied into another row is not re-signed there either)
    assert sorted(f["xcom"].split("key=")[1] for f in summary["references_failed"]) == ["'copied'", "'edited'"]
    assert rewrap.returncode == 1
    again = cli(env, "keys", "rewrap", "--store-url", f"file://{env.store}", "--keysets", f"file:{keyfile}")
    assert json.loads(again.stdout[again.stdout.index("{"):])["rewrapped"] == 0  # repeatable: nothing left
    assert cli(env, "keys", "remove", str(keyfile), old_key).returncode == 0
    assert json.loads(keyfile.read_text())["primary"] == new_key
    after_remove = env.dags_test(SINK, logical_date="2026-02-05T00:00:00+00:00", conf=conf)
    for key in ("first", "second"):
        assert after_remove.task_state(f"read_{key}") == "success", after_remove.task_log(f"read_{key}")[-3000:]


@pytest.fixture(scope="module")
def secrets_env(make_airflow_env) -> AirflowEnv:
    env = make_airflow_env("secrets", dags=["xcs_security.py"])
    env.config["AIRFLOW_CONN_XCS_DB"] = json.dumps(CONN)
    return env


def _no_secret_anywhere(env: AirflowEnv, run: DagRunResult) -> None:
    assert PASSWORD not in run.output and AWS_KEY not in run.output
    for row in env.xcom_rows(SECRETS, run.run_id):
        text = json.dumps(row.value)
        assert PASSWORD not in text and AWS_KEY not in text
    for rel in env.store_objects():
        data = (env.store / rel).read_bytes()
        assert PASSWORD.encode() not in data and AWS_KEY.encode() not in data, rel


def test_secrets_are_rejected_under_policy_reject(secrets_env) -> None:
    env = secrets_env
    run = env.dags_test(SECRETS, logical_date="2026-03-01T00:00:00+00:00", env={"AIRFLOW__XCOMSTASH__SENSITIVE_DATA": "reject"})
    name, message = failed_with(run, "leak")
    assert name == "xcomstash.errors.SensitiveDataError"
    assert "registered-secret" in message and "aws-access-key" in message
    assert env.xcom_rows(SECRETS, run.run_id, "leak") == []
    _no_secret_anywhere(env, run)


def test_secrets_are_masked_under_policy_mask_inline_and_stored(secrets_env) -> None:
    env = secrets_env
    for exclusive in ("False", "True"):
        run = env.dags_test(
            SECRETS, logical_date=f"2026-03-0{2 if exclusive == 'False' else 3}T00:00:00+00:00",
            env={"AIRFLOW__XCOMSTASH__SENSITIVE_DATA": "mask", "AIRFLOW__XCOMSTASH__EXCLUSIVE": exclusive},
        )
        run.assert_success()
        row = env.xcom_value(SECRETS, run.run_id, "leak")
        if exclusive == "False":
            assert row == {"host": "db.internal", "credential": "***", "note": "ops key *** rotates monthly", "rows": 3}
        else:
            assert row["__xcomstash__"] == 1 and row["summary"] == "dict 4 keys"
        assert "'credential': '***'" in run.task_log("consume")
        _no_secret_anywhere(env, run)


def test_keyset_from_an_airflow_variable(secrets_env) -> None:
    """``keysets = variable:NAME`` reads the keyset through Airflow's Variables (here from the
    environment-variables secrets backend, AIRFLOW_VAR_*), inside the task process. (The
    installation of the secrets tests, whose runs used no keyset: another DAG here.)"""
    from xcomstash.security.crypto.keyset import Keyset

    env = secrets_env
    keyset = Keyset.generate()
    run = env.dags_test(
        OTHER,
        logical_date="2026-04-01T00:00:00+00:00",
        env={"AIRFLOW__XCOMSTASH__KEYSETS": "variable:xcs_keyset", "AIRFLOW_VAR_XCS_KEYSET": keyset.to_json()},
    )
    run.assert_success()
    ref = env.xcom_value(OTHER, run.run_id, "own", "copied")
    assert ref["mac"].startswith(keyset.primary_id + ":")
    assert b'"alg":"aes256gcm-stream-v2"' in env.object_path(ref).read_bytes()[:2000]
    assert keyset.to_json() not in run.output and json.loads(keyset.to_json())["keys"][0]["secret"] not in run.output
