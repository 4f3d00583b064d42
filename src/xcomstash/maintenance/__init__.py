"""Lifecycle of stored objects: reconcile (garbage collection), retention, verify, migrate and
stats. Engine side only: nothing here imports Airflow. The rows of the xcom table come in
through :class:`xcomstash.maintenance.rows.RowSource` (implemented for Airflow's database and
REST API in :mod:`xcomstash.airflow.row_sources`)."""
