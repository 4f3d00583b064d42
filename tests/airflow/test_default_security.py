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

    victim = env.dags_test(VICTIM, logical_date=DAY)
    victim.assert_success()
    reader = env.dags_test(READER, logical_date=DAY)
    reader.assert_success()

    stolen = env.xcom_value(VICTIM, victim.run_id, "secret_frame")
    restricted = env.xcom_value(VICTIM, victim.run_id, "restricted")
    own = env.xcom_value(READER, reader.run_id, "produce", "edited")
    keyset = env.home / "xcomstash-keyset.json"
    rows = {
        "copied": stolen,
        "copied_table": stolen,
        "edited": {**stolen, "xcom": own["xcom"]},
        "stripped": {k: v for k, v in restricted.items() if k != "readers"},
        "plain": {"attacker": "value"},
        "traversal": f"file://{legacy_base}/../victim.json",
        "traversal_keyset": f"file://{legacy_base}/../home/{keyset.name}",
    }
    for key, value in rows.items():
        env.set_xcom_value(READER, reader.run_id, "produce", key, value)
    out = env.root / "reads.json"
    read = env.tasks_test(
        READER, "read_all", reader.run_id,
        env={"XCS_ATTACK_OUT": str(out), "AIRFLOW__XCOMSTASH__EXCLUSIVE": "True"},
    )
    assert out.exists(), read.describe()
    reads = json.loads(out.read_text())
    legit_uri = env.xcom_value(READER, reader.run_id, "produce", "legit")["uri"]
    # Clearing the producer and running it again purges its rows (Airflow deletes a task's
    # XComs when it runs again): the forged ones among them included.
    env.tasks_clear(READER, "produce", reader.logical_date)
    rerun = env.tasks_test(READER, "produce", reader.run_id)
    rerun.assert_ok()
    return {"env": env, "victim": victim, "reader": reader, "reads": reads, "keyset": keyset,
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
