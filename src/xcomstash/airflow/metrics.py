"""xcomstash metrics through Airflow's own ``Stats``: whatever the deployment configured in
``[metrics]`` (statsd, Datadog, OpenTelemetry, name allow and block lists, the statsd
prefix, InfluxDB-style tags) applies to them as to Airflow's own task metrics.

The metrics themselves come from :mod:`xcomstash.observe.metrics`; this module only decides
whether they are on and hands each to ``Stats``.
"""

from __future__ import annotations

from typing import Any

from xcomstash.observe.metrics import COUNTER, GAUGE, TIMER, Metric, MetricsRecorder

SECTION = "xcomstash"
#: The ``[metrics]`` switches of Airflow's own metrics backends.
_AIRFLOW_BACKENDS = ("statsd_on", "statsd_datadog_enabled", "otel_on")


def airflow_metrics_on(conf: Any) -> bool:
    """Whether Airflow sends metrics anywhere (statsd, Datadog or OpenTelemetry)."""
    return any(conf.getboolean("metrics", name, fallback=False) for name in _AIRFLOW_BACKENDS)


def metrics_enabled(conf: Any) -> bool:
    """``[xcomstash] metrics`` (default on), and Airflow's metrics switched on: with no
    backend configured there is nothing to send to, so no recorder is subscribed at all."""
    return conf.getboolean(SECTION, "metrics", fallback=True) and airflow_metrics_on(conf)


class StatsSink:
    """Sends each :class:`Metric` through Airflow's ``Stats`` (``airflow.sdk.observability``,
    the entry point Airflow recommends to providers, on 3.2 and later), with its tags as
    Airflow passes its own."""

    def __init__(self) -> None:
        from xcomstash.airflow.compat import stats

        self._stats = stats()

    def __call__(self, metric: Metric) -> None:
        tags = metric.tag_dict()
        if metric.kind == COUNTER:
            self._stats.incr(metric.name, int(metric.value), tags=tags)
        elif metric.kind == GAUGE:
            self._stats.gauge(metric.name, metric.value, tags=tags)
        elif metric.kind == TIMER:
            self._stats.timing(metric.name, metric.value, tags=tags)
        else:  # pragma: no cover - observe.metrics only makes the three kinds
            raise ValueError(f"unknown metric kind {metric.kind!r} of {metric.name}")


def metrics_subscribers(conf: Any, *, own_process: bool = False) -> list[MetricsRecorder]:
    """The metrics subscriber for the engine, or none when metrics are off.

    ``own_process``: the caller is a process Airflow did not start (the ``xcomstash``
    command), so Airflow's ``Stats`` is set up here from ``[metrics]``, as Airflow's own
    processes (task runner, scheduler, API server) set it up for themselves."""
    if not metrics_enabled(conf):
        return []
    if own_process:
        from xcomstash.airflow.compat import initialize_stats

        initialize_stats(export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True))
    return [MetricsRecorder(StatsSink())]
