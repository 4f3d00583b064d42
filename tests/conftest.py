"""Shared test configuration. Server fixtures live next to the tests that need them
(tests/stores/conftest.py, tests/airflow/conftest.py); tests/servers.py starts real servers."""
