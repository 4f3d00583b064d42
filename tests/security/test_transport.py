from __future__ import annotations

import pytest

from xcomstash.errors import ConfigError
from xcomstash.security.transport import check_endpoint, is_loopback


@pytest.mark.parametrize("endpoint", [None, "", "https://s3.amazonaws.com", "https://minio.internal:9000"])
def test_tls_and_default_endpoints_pass(endpoint) -> None:
    check_endpoint(endpoint, allow_http=False)


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8333", "http://localhost:9000", "http://[::1]:9000", "http://127.0.0.2"])
def test_plain_http_only_when_allowed_and_on_loopback(endpoint) -> None:
    with pytest.raises(ConfigError, match="allow_http_endpoints"):
        check_endpoint(endpoint, allow_http=False)
    check_endpoint(endpoint, allow_http=True)


@pytest.mark.parametrize("endpoint", ["http://10.0.0.5:9000", "http://s3.example.com", "http://localhost.evil.com", "http://127.0.0.1.nip.io"])
def test_plain_http_to_other_hosts_is_refused_even_when_allowed(endpoint) -> None:
    with pytest.raises(ConfigError, match="not this machine"):
        check_endpoint(endpoint, allow_http=True)


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ConfigError):
        check_endpoint("ftp://127.0.0.1", allow_http=True)


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("LOCALHOST")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.com")
