"""The deployment checks (:mod:`xcomstash.maintenance.check`) with this host's Airflow
configuration: ``[xcomstash]`` options, store clients from Airflow connections, keysets from
files, env vars and Airflow Variables, and the metadata database's clock. What ``xcomstash
check`` prints and what the plugin's overview page shows as the API server sees it."""

from __future__ import annotations

from datetime import datetime, timezone

from xcomstash.errors import XComStashError
from xcomstash.maintenance.check import CheckResult, KeysetSettings, run_checks

__all__ = ["checks_here", "database_time"]


def checks_here() -> list[CheckResult]:
    """Every check, as this host sees the deployment. A configuration that does not parse is
    one ``fail`` line (nothing else can be checked without it); never raises for a failure."""
    from xcomstash.airflow.connections import client_for
    from xcomstash.airflow.security_settings import SECTION, _tristate, local_keyset_path, variable_source
    from xcomstash.airflow.settings import _conf, read_config
    from xcomstash.security.rules import parse_dag_policies

    try:
        config = read_config()[0]
        conf = _conf()
        keysets = KeysetSettings(
            spec=conf.get(SECTION, "keysets", fallback="") or "",
            sign_references=_tristate(conf, "sign_references"),
            default_path=local_keyset_path(),
            dag_patterns=tuple(rule.dags for rule in parse_dag_policies(conf.get(SECTION, "dag_policies", fallback="") or "")),
        )
    except Exception as exc:  # ConfigError, or Airflow's own (an option that is not a number)
        what = str(exc) if isinstance(exc, XComStashError) else f"{type(exc).__name__}: {exc}"
        return [
            CheckResult(
                "config", "fail", f"the [xcomstash] configuration does not parse: {what}",
                "fix the option the message names (airflow config get-value xcomstash <option>; "
                "AIRFLOW__XCOMSTASH__<OPTION> in the environment overrides airflow.cfg)",
            )
        ]
    return run_checks(
        config, clients=client_for, keysets=keysets, resolvers={"variable": variable_source}, database_time=database_time
    )


def database_time() -> float:
    """The metadata database's clock (POSIX seconds), by ``SELECT CURRENT_TIMESTAMP``."""
    import os

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from airflow.utils.session import create_session
    from xcomstash.airflow.settings import _conf

    url = make_url(_conf().get("database", "sql_alchemy_conn", fallback="") or "sqlite://")
    if url.get_backend_name() == "sqlite" and url.database and not os.path.exists(url.database):
        # Connecting would create an empty database file: a host without one (a worker) keeps none.
        raise FileNotFoundError(f"the SQLite database {url.database} does not exist on this host")

    with create_session() as session:
        value = session.execute(text("SELECT CURRENT_TIMESTAMP")).scalar()
    if isinstance(value, str):  # SQLite: "YYYY-MM-DD HH:MM:SS", UTC
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"the database answered {type(value).__name__} for CURRENT_TIMESTAMP")
    if value.tzinfo is None:  # SQLite, and MySQL sessions Airflow keeps in UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()
