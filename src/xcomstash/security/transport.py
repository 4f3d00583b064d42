"""In transit: object store endpoints must use TLS, unless plain HTTP is explicitly allowed
and the endpoint is on this machine (a local test server, a sidecar).

Checked when a store is opened, against the endpoint the client will actually talk to (for
S3, the connection's ``endpoint_url`` or the AWS default, which is HTTPS).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from xcomstash.errors import ConfigError

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(endpoint: str | None, *, allow_http: bool, what: str = "store endpoint") -> None:
    """Raise :class:`ConfigError` unless ``endpoint`` is HTTPS, or HTTP on loopback with
    ``allow_http``. ``None`` (the provider's default endpoint) is HTTPS for every SDK we use."""
    if not endpoint:
        return
    parts = urlsplit(endpoint)
    scheme = parts.scheme.lower()
    if scheme == "https":
        return
    host = parts.hostname or ""
    if scheme == "http":
        if not allow_http:
            raise ConfigError(
                f"{what} {endpoint!r} is plain HTTP: xcomstash requires TLS (https://). For a local "
                "test server set [xcomstash] allow_http_endpoints = True (loopback addresses only)"
            )
        if not is_loopback(host):
            raise ConfigError(
                f"{what} {endpoint!r} is plain HTTP to a host that is not this machine; "
                "allow_http_endpoints only permits loopback addresses (127.0.0.1, ::1, localhost)"
            )
        return
    raise ConfigError(f"{what} {endpoint!r} has unsupported scheme {scheme!r} (use https://)")
