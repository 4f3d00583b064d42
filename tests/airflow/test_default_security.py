"""The README's default configuration attacked by someone who may only write XCom rows
(what Airflow's REST API ``PATCH``/``POST .../xcomEntries`` gives; here written straight into
the metadata database between the producer's push and the reader's pull), in real Airflow
(``airflow dags test`` / ``tasks test`` on SQLite, the default local store, no keysets set).

- references are signed without any setup: a keyset is created on first use, private, in
  ``AIRFLOW_HOME``;
- a genuine reference of another DAG copied into a row, or edited (its ``xcom`` re-targeted,
  its ``readers`` stripped), is refused inside the reading task, through ``xcom_pull`` and
  through ``pull_table`` (a partial read) alike;
- a common.io row that climbs out of the common.io base (``<base>/../victim.json``, or to
  the keyset) is refused, and clearing the task deletes neither file;
- in exclusive mode a plain value written over a reference is refused.
"""

from __future__ import annotations

import json
import stat
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

pytestmark = pytest.mark.airflow

VICTIM, READER = "xcs_attack_victim", "xcs_attack_reader"
DAY = "2026-03-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def attacked(make_airflow_env, tmp_path_factory) -> dict[str, Any]:
    env = make_airflow_env("default_security", dags=["xcs_attack.py"])
    legacy_base = env.root / "legacy"
    legacy_base.mkdir()
    (env.root / "victim.json").write_text(json.dumps({"card": "4111-1111-1111-1111"}))
    env.config["AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH"] = f"file://{legacy_base}"

    with env.one_process():  # nothing is tampered with between these two runs
        victim = env.dags_test(VICTIM, logical_date=DAY)
        victim.assert_success()
        reader = env.dags_test(READER, logical_date=DAY)
        reader.assert_success()

    stolen = env.xcom_value(VICTIM, victim.run_id, "secret_frame")
    restricted = env.xcom_value(VICTIM, victim.run_id, "restricted")
    own = env.xcom_value(READER, reader.run_id, "produce", "edited")
    own_restricted = env.xcom_value(READER, reader.run_id, "produce", "unsigned_stripped")
    assert own_restricted["readers"] == {"dag_id": READER, "tasks": ["consume_only"]}
    keyset = env.home / "xcomstash-keyset.json"
    rows = {
        "copied": stolen,
        "copied_table": stolen,
        "edited": {**stolen, "xcom": own["xcom"]},
        "stripped": {k: v for k, v in restricted.items() if k != "readers"},
        # A value of this DAG restricted to another task: while unsigned references are
        # accepted (switching signing on), its MAC and readers are stripped.
        "unsigned_stripped": {k: v for k, v in own_restricted.items() if k not in ("readers", "mac")},
        "plain": {"attacker": "value"},
        "traversal": f"file://{legacy_base}/../victim.json",
        "traversal_keyset": f"file://{legacy_base}/../home/{keyset.name}",
    }
    for key, value in rows.items():
        env.set_xcom_value(READER, reader.run_id, "produce", key, value)
    out = env.root / "reads.json"
    # The reader runs in exclusive mode, with unsigned references accepted for objects older
    # than an hour ago (as while switching signing on), auditing to the store too.
    an_hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    read = env.tasks_test(
        READER, "read_all", reader.run_id,
        env={
            "XCS_ATTACK_OUT": str(out),
            "AIRFLOW__XCOMSTASH__EXCLUSIVE": "True",
            "AIRFLOW__XCOMSTASH__ACCEPT_UNSIGNED_REFERENCES": an_hour_ago,
            "AIRFLOW__XCOMSTASH__AUDIT": "log,store",
        },
    )
    assert out.exists(), read.describe()
    reads = json.loads(out.read_text())
    denied = env.xcomstash("audit", "--dag", READER, "--outcome", "denied", "--json")
    denied.assert_ok()
    audit = [json.loads(line) for line in denied.stdout.splitlines() if line.startswith("{")]
    legit_uri = env.xcom_value(READER, reader.run_id, "produce", "legit")["uri"]
    # Clearing the producer and running it again purges its rows (Airflow deletes a task's
    # XComs when it runs again): the forged ones among them included.
    env.tasks_clear(READER, "produce", reader.logical_date)
    rerun = env.tasks_test(READER, "produce", reader.run_id)
    rerun.assert_ok()
    return {"env": env, "victim": victim, "reader": reader, "reads": reads, "keyset": keyset, "audit": audit,
            "legit_uri": legit_uri, "stolen": stolen}


def test_references_are_signed_by_default_with_a_private_keyset_created_on_first_use(attacked) -> None:
    env, victim = attacked["env"], attacked["victim"]
    for row in env.xcom_rows(VICTIM, victim.run_id):
        if row.is_reference:
            assert row.value.get("mac", "").count(":") == 1, row
    assert stat.S_IMODE(attacked["keyset"].stat().st_mode) == 0o600
    assert attacked["stolen"]["mac"]


def test_the_reader_still_reads_its_own_reference(attacked) -> None:
    assert attacked["reads"]["legit"].get("ok") == "DataFrame", attacked["reads"]["legit"]


@pytest.mark.parametrize("key", ["copied", "copied_table", "edited", "stripped"])
def test_another_dags_reference_copied_or_edited_into_a_row_is_refused(attacked, key) -> None:
    read = attacked["reads"][key]
    assert read.get("error") in ("ReferenceSignatureError", "AccessDeniedError"), read
    assert "XComStash" not in read.get("ok", "")


def test_a_restricted_value_stripped_of_mac_and_readers_is_refused_while_unsigned_references_are_accepted(
    attacked,
) -> None:
    read = attacked["reads"]["unsigned_stripped"]
    assert read.get("error") == "ReferenceSignatureError" and "written after signing" in read["message"], read


def test_denied_pulls_are_filed_under_the_xcom_the_reader_asked_for(attacked) -> None:
    audit = attacked["audit"]
    keys = {e["xcom"]["key"] for e in audit}
    assert {"copied", "edited", "stripped", "unsigned_stripped", "plain"} <= keys, audit
    assert all(e["xcom"]["dag_id"] == READER for e in audit)
    # What the forged rows claimed (the victim's XCom) is kept beside it.
    assert any((e.get("claimed") or {}).get("dag_id") == VICTIM for e in audit), audit


def test_a_plain_value_over_a_reference_is_refused_in_exclusive_mode(attacked) -> None:
    read = attacked["reads"]["plain"]
    assert read.get("error") == "PlainRowError", read


@pytest.mark.parametrize("key", ["traversal", "traversal_keyset"])
def test_a_common_io_row_outside_its_base_is_neither_read_nor_deleted(attacked, key) -> None:
    read = attacked["reads"][key]
    assert read.get("error") == "ReferenceSignatureError", read
    assert "4111" not in json.dumps(read) and "secret" not in read.get("head", "")
    env = attacked["env"]
    assert (env.root / "victim.json").exists()
    assert attacked["keyset"].exists()


def test_rerunning_the_cleared_task_purged_its_own_objects_and_nothing_the_forged_rows_name(attacked) -> None:
    env = attacked["env"]
    purged = [e["uri"] for e in env.trace("purge")]
    assert attacked["legit_uri"] in purged  # the purge ran
    assert not [u for u in purged if "victim" in u or "keyset" in u or "legacy" in u]
    assert (env.root / "victim.json").exists() and attacked["keyset"].exists()
