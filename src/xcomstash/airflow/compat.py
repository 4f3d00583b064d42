"""Where each supported Airflow minor keeps what the adapter uses: the one place that knows.

Airflow 3 moves task-facing pieces out of airflow-core into the Task SDK (``airflow.sdk``)
from one minor release to the next. Each function here tries the newest location first and
falls back to the older one; the rest of the adapter asks this module and never names a
version-specific path. Supported: Airflow 3.1, 3.2 and 3.3 (see docs/compatibility.md).

What moved, and in which release:

- ``conf`` (configuration): ``airflow.sdk.configuration`` from 3.2; ``airflow.configuration``
  in 3.1.
- serde (how Airflow turns an inline value into JSON): ``airflow.sdk.serde`` from 3.2;
  ``airflow.serialization.serde`` in 3.1 (same functions, same output).
- ``AirflowPlugin``: ``airflow.sdk.plugins_manager`` from 3.2 (what a worker without
  airflow-core has); ``airflow.plugins_manager`` in 3.1. ``fastapi_apps`` and
  ``external_views`` (destinations ``nav`` and ``task_instance``) exist in 3.1 already.
- ``AirflowNotFoundException`` (an undefined connection): ``airflow.sdk.exceptions`` from
  3.2; ``airflow.exceptions`` in 3.1.
- metrics (``Stats``): 3.3 has module functions ``airflow.sdk.observability.stats.incr``,
  ``gauge``, ``timing`` and ``initialize(factory=..., export_legacy_names=...)``; 3.2 has the
  class ``airflow.sdk.observability.stats.Stats`` (``Stats.initialize(factory=...)``, the
  factory made by ``get_stats_factory(Stats)``); 3.1 has ``airflow.stats.Stats``, which sets
  itself up from ``[metrics]`` on first use.
- the secrets masker: ``airflow.sdk._shared.secrets_masker`` in every supported minor
  (``airflow.sdk.execution_time.secrets_masker``, its 3.0 home, is a deprecated alias in 3.1).

Not here because nothing moved: ``BaseXCom`` (``airflow.sdk.bases.xcom``), the supervisor
messages (``airflow.sdk.execution_time.comms``), ``airflow.models`` and the API server's
security (``airflow.api_fastapi``). The async XCom hooks (``aset``, ``aget_one``,
``aget_all``) are called by Airflow 3.3 only; on 3.1 and 3.2 the backend's versions are
never called and the synchronous ones do the work.

Every import is inside a function: the plugin module imports this one in every task process.
"""

from __future__ import annotations

from typing import Any, Callable


def conf() -> Any:
    """Airflow's configuration object (``[xcomstash]``, ``[metrics]``, ...)."""
    try:
        from airflow.sdk.configuration import conf as airflow_conf  # 3.2+
    except ImportError:
        from airflow.configuration import conf as airflow_conf  # 3.1
    return airflow_conf


def serde() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``(serialize, deserialize)`` of Airflow's serde, which BaseXCom uses for inline values."""
    try:
        from airflow.sdk.serde import deserialize, serialize  # 3.2+
    except ImportError:
        from airflow.serialization.serde import deserialize, serialize  # 3.1
    return serialize, deserialize


def plugin_base() -> type:
    """The ``AirflowPlugin`` class a plugin subclasses."""
    try:
        from airflow.sdk.plugins_manager import AirflowPlugin  # 3.2+
    except ImportError:
        from airflow.plugins_manager import AirflowPlugin  # 3.1
    return AirflowPlugin


def not_found_error() -> type[Exception]:
    """What ``BaseHook.get_connection`` raises for a connection that is not defined."""
    try:
        from airflow.sdk.exceptions import AirflowNotFoundException  # 3.2+
    except ImportError:
        from airflow.exceptions import AirflowNotFoundException  # 3.1
    return AirflowNotFoundException


def secrets_masker() -> Any:
    """The secrets masker of this process."""
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    return _secrets_masker()


def stats() -> Any:
    """Airflow's ``Stats``: something with ``incr(name, count, tags=)``, ``gauge(name, value,
    tags=)`` and ``timing(name, ms, tags=)`` that sends to the backend ``[metrics]`` chose."""
    try:
        from airflow.sdk.observability import stats as module  # 3.2+
    except ImportError:
        from airflow.stats import Stats  # 3.1

        return Stats
    return module if hasattr(module, "incr") else module.Stats  # 3.3: functions; 3.2: the class


def initialize_stats(export_legacy_names: bool) -> None:
    """Set ``Stats`` up from ``[metrics]`` in a process Airflow did not start (Airflow's own
    processes do it themselves)."""
    try:
        from airflow.sdk.observability import stats as module  # 3.2+
        from airflow.sdk.observability.metrics import stats_utils
    except ImportError:  # 3.1: airflow.stats.Stats reads [metrics] on first use
        return
    if hasattr(module, "initialize"):  # 3.3
        module.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=export_legacy_names)
    else:  # 3.2 (no legacy names there)
        module.Stats.initialize(factory=stats_utils.get_stats_factory(module.Stats))
