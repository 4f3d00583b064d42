"""``[xcomstash]`` options as the backend reads them from Airflow's configuration (in-process:
Airflow's config resolves the environment at each lookup)."""

from __future__ import annotations

import pytest

from xcomstash.errors import ConfigError

pytestmark = pytest.mark.airflow


def test_the_hash_option_reaches_the_engine_config(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from xcomstash.airflow.settings import read_config

    monkeypatch.setenv("AIRFLOW__XCOMSTASH__STORE_URL", f"file://{tmp_path}")
    monkeypatch.delenv("AIRFLOW__XCOMSTASH__HASH", raising=False)
    assert read_config()[0].hash == "blake3"
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__HASH", "sha256")
    assert read_config()[0].hash == "sha256"
    monkeypatch.setenv("AIRFLOW__XCOMSTASH__HASH", "md5")
    with pytest.raises(ConfigError, match="hash must be one of blake3, sha256, got 'md5'"):
        read_config()
