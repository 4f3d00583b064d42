"""The harness of the real-server test tiers (tests/airflow, tests/maintenance,
tests/deployment), in one place:

- ``servers``: SeaweedFS (S3), PostgreSQL and Redis on free loopback ports, stopped by pid;
- ``processes``: long-running child processes (Airflow's scheduler, API server, workers),
  stopped by pid with their whole process tree;
- ``airflow``: a private Airflow installation (AIRFLOW_HOME, config, a migrated metadata DB
  on SQLite or PostgreSQL copied from a template), ``airflow dags test`` and other commands,
  and reading the xcom rows, store and trace they left;
- ``airflow_runner``: a script, not imported: the fork server every ``airflow`` and
  ``xcomstash`` command of an installation runs under (Airflow imported once per server);
- ``api``: Airflow's REST API client (trigger, wait, task logs, clear);
- ``proxy``: a TCP proxy that makes a server slow, hung or flaky on demand;
- ``fixtures``: the session fixtures built from these (a pytest plugin).

Importing any of these starts nothing and imports neither Airflow nor boto3.
"""
