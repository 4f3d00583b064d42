"""``[xcomstash] exclusive`` and the provider's configuration section, as Airflow sees them."""

from __future__ import annotations

import re

import pytest

from tests.harness.airflow import MARKER
from xcomstash.airflow.provider import get_provider_info

pytestmark = pytest.mark.airflow


def test_exclusive_mode_stores_every_value(make_airflow_env) -> None:
    env = make_airflow_env("exclusive", dags=["xcs_exclusive.py"])
    run = env.dags_test("xcs_exclusive", env={"AIRFLOW__XCOMSTASH__EXCLUSIVE": "True"})
    run.assert_success()

    rows = env.xcom_rows("xcs_exclusive", run.run_id)
    # 4 returns + 1 custom key + 5 mapped returns + the consumer's own return value
    assert len(rows) == 11
    not_stored = [(r.task_id, r.map_index, r.key, r.value) for r in rows if not r.is_reference]
    assert not_stored == []
    for row in rows:
        path = env.object_path(row.value)
        assert path.stat().st_size == row.value["size"]
    assert len(env.store_objects()) == len(rows)
    # Even the smallest values keep their type through the store.
    by_task = {(r.task_id, r.map_index, r.key): r.value for r in rows}
    assert by_task[("produce_number", -1, "return_value")]["codec"] == "json"
    assert by_task[("produce_scalar", -1, "return_value")]["codec"] == "numpy.scalar"
    assert by_task[("produce_frame", -1, "return_value")]["codec"] == "pandas.arrow-ipc"
    consumed = env.xcom_value("xcs_exclusive", run.run_id, "consume")
    assert consumed[MARKER] == 1  # the consumer's checks ran; their result is itself stored
    assert all(e["route"] == "stored" for e in env.trace())


def test_config_section_is_listed_with_descriptions(make_airflow_env) -> None:
    """The provider registers ``[xcomstash]``: ``airflow config list`` shows every option with
    its description, and the values Airflow resolves (defaults and environment)."""
    env = make_airflow_env("config")
    result = env.airflow(
        "config", "list", "--section", "xcomstash", "--include-descriptions", "--show-values", "--color", "off",
        env={"AIRFLOW__XCOMSTASH__THRESHOLD": "12345"},
    )
    result.assert_ok()
    out = result.stdout
    assert "[xcomstash]" in out
    options = get_provider_info()["config"]["xcomstash"]["options"]
    assert len(options) >= 9
    for name, spec in options.items():
        description = " ".join(spec["description"].split())
        assert description[:60] in " ".join(out.split()), f"description of {name} missing"
        assert re.search(rf"^{name} = ", out, re.M), f"option {name} missing"
    assert re.search(r"^threshold = 12345$", out, re.M)
    assert re.search(r"^compression = auto$", out, re.M)
    assert re.search(r"^exclusive = False$", out, re.M)
