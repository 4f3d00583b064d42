"""The thin Airflow adapter: translates Airflow's XCom calls into engine calls.

Switch it on with ``AIRFLOW__CORE__XCOM_BACKEND=xcomstash.airflow.backend.XComStashBackend``.
"""
