"""xcomstash.airflow.compat on the main Airflow (3.3): every lookup finds the Task SDK's own
location, not a fallback kept for an older minor (those run in tests/versions)."""

from __future__ import annotations

import pytest

from xcomstash.airflow import compat

pytest.importorskip("airflow.sdk.observability")


def test_lookups_find_the_task_sdk_locations_of_airflow_3_3() -> None:
    import airflow.sdk.configuration
    import airflow.sdk.exceptions
    import airflow.sdk.plugins_manager
    import airflow.sdk.serde
    from airflow.sdk._shared.secrets_masker import _secrets_masker
    from airflow.sdk.observability import stats

    assert compat.conf() is airflow.sdk.configuration.conf
    assert compat.serde() == (airflow.sdk.serde.serialize, airflow.sdk.serde.deserialize)
    assert compat.plugin_base() is airflow.sdk.plugins_manager.AirflowPlugin
    assert compat.not_found_error() is airflow.sdk.exceptions.AirflowNotFoundException
    assert compat.secrets_masker() is _secrets_masker()
    assert compat.stats() is stats  # 3.3: the module's functions, not 3.2's Stats class


def test_the_plugin_subclasses_the_class_airflow_loads_plugins_as() -> None:
    import airflow.sdk.plugins_manager

    from xcomstash.airflow.plugin import XComStashPlugin

    assert issubclass(XComStashPlugin, airflow.sdk.plugins_manager.AirflowPlugin)
