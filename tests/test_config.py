"""StashConfig validates on construction: a bad store URL, threshold, compression or level is a
ConfigError before any value is pushed."""

from __future__ import annotations

import dataclasses

import pytest

from xcomstash import ConfigError, StashConfig, XComStashError
from xcomstash.config import DEFAULT_THRESHOLD


def test_defaults_are_valid() -> None:
    config = StashConfig()
    assert config.threshold == DEFAULT_THRESHOLD == 64 * 1024
    assert config.compression == "auto"
    assert config.exclusive is False


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/xcom",
        "file://localhost/tmp/xcom",
        "s3://bucket",
        "s3://bucket/prefix/deeper",
        "s3://aws_default@bucket/prefix",
    ],
)
def test_supported_store_urls_are_accepted(url: str) -> None:
    assert StashConfig(store_url=url).store_url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/xcom",
        "gs://",
        "abfs://conn@/prefix",
        "abfs://@account.dfs.core.windows.net/prefix",
        "redis://somehost:6379/prefix",
        "/tmp/xcom",
        "tmp/xcom",
        "",
        "file://relative/path",
        "file://otherhost/tmp/xcom",
        "file:relative",
        "s3://",
        "s3://conn@/prefix",
    ],
)
def test_bad_store_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        StashConfig(store_url=url)


@pytest.mark.parametrize("threshold", [-1, -(2**40), 1.5, "1024", None])
def test_negative_or_non_integer_threshold_is_a_config_error(threshold) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        StashConfig(threshold=threshold)


@pytest.mark.parametrize("threshold", [0, 1, 2**40])
def test_non_negative_threshold_is_accepted(threshold: int) -> None:
    assert StashConfig(threshold=threshold).threshold == threshold


@pytest.mark.parametrize("compression", ["gzip", "ZSTD", "", "lz4", None])
def test_unknown_compression_is_a_config_error(compression) -> None:
    with pytest.raises(ConfigError, match="compression"):
        StashConfig(compression=compression)


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_known_compression_is_accepted(compression: str) -> None:
    assert StashConfig(compression=compression).compression == compression


@pytest.mark.parametrize("level", [0, 23, -1])
def test_compression_level_outside_1_to_22_is_a_config_error(level: int) -> None:
    with pytest.raises(ConfigError, match="compression_level"):
        StashConfig(compression_level=level)


def test_negative_cache_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cache_max_bytes"):
        StashConfig(cache_max_bytes=-1)


def test_config_errors_are_xcomstash_errors_and_config_is_frozen() -> None:
    assert issubclass(ConfigError, XComStashError)
    with pytest.raises(dataclasses.FrozenInstanceError):
        StashConfig().threshold = 0  # type: ignore[misc]
