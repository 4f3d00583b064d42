"""Which inline strings are common.io rows this configuration cannot read (``legacy.unconfigured_row``):
only a path written for exactly the XCom being read, outside the configured common.io base."""

from __future__ import annotations

import pytest

from xcomstash.security.readers import Expected

legacy = pytest.importorskip("xcomstash.airflow.legacy")

XCOM = Expected(dag_id="etl", run_id="manual__1", task_id="load")
UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
PATH = f"s3://old-bucket/xcom/etl/manual__1/load/{UUID}"


@pytest.fixture(autouse=True)
def _no_common_io_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", raising=False)


def test_a_path_written_for_this_xcom_without_the_setting_is_refused_naming_it() -> None:
    problem = legacy.unconfigured_row(PATH, XCOM)
    assert problem and "xcom_objectstorage_path" in problem and "it is not set" in problem and PATH in problem
    assert legacy.unconfigured_row(PATH + ".gz", XCOM)  # common.io's compressed objects too


def test_a_path_under_another_base_than_the_configured_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", "s3://new-bucket/xcom")
    assert "'s3://new-bucket/xcom'" in legacy.unconfigured_row(PATH, XCOM)
    monkeypatch.setenv("AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH", "s3://old-bucket/xcom")
    assert legacy.unconfigured_row(PATH, XCOM) is None  # readable: the legacy reader takes it


@pytest.mark.parametrize(
    "value",
    [
        "s3://old-bucket/xcom/etl/manual__1/other_task/" + UUID,  # another XCom's path
        "s3://old-bucket/report.csv",  # a URL a task returned
        f"etl/manual__1/load/{UUID}",  # no scheme
        "just text",
        f"s3://old-bucket/xcom/etl/manual__1/load/not-a-uuid",
    ],
)
def test_other_strings_are_values(value: str) -> None:
    assert legacy.unconfigured_row(value, XCOM) is None


def test_without_a_known_xcom_nothing_is_refused() -> None:
    assert legacy.unconfigured_row(PATH, None) is None
