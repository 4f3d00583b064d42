"""Store clients from Airflow connections: the credentials of a store URL's location.

A store URL may name a connection (``s3://my_conn@bucket/prefix``); otherwise each kind uses
the default connection its Airflow provider uses (``aws_default``, ``google_cloud_default``,
``wasb_default``, ``redis_default``). Every endpoint must use TLS unless
``[xcomstash] allow_http_endpoints`` is on and the endpoint is on this machine.
"""

from __future__ import annotations

from typing import Any

from xcomstash.stores.locations import StoreLocation

SECTION = "xcomstash"

#: The connection each kind uses when the URL names none (the Airflow providers' defaults).
DEFAULT_CONN_IDS = {
    "s3": "aws_default",
    "gcs": "google_cloud_default",
    "azure": "wasb_default",
    "redis": "redis_default",
}


def _conf() -> Any:
    from xcomstash.airflow.settings import _conf as conf

    return conf()


def allow_http() -> bool:
    return _conf().getboolean(SECTION, "allow_http_endpoints", fallback=False)


def conn_id_of(location: StoreLocation) -> str:
    return location.conn_id or DEFAULT_CONN_IDS[location.kind]


def client_for(location: StoreLocation) -> Any:
    """The service client for ``location``, configured by its Airflow connection."""
    builders = {"s3": s3_client, "redis": redis_client}
    try:
        build = builders[location.kind]
    except KeyError:
        raise NotImplementedError(f"no Airflow connection support for {location.kind!r} stores") from None
    return build(location)


def s3_client(location: StoreLocation) -> Any:
    """A boto3 S3 client configured by an Airflow AWS connection (endpoint, keys, region)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from xcomstash.security.transport import check_endpoint

    conn_id = conn_id_of(location)
    client = S3Hook(aws_conn_id=conn_id).get_conn()
    check_endpoint(
        getattr(client.meta, "endpoint_url", None),
        allow_http=allow_http(),
        what=f"S3 endpoint of connection {conn_id!r}",
    )
    return client


#: The TLS settings a Redis connection's extra may carry (the Redis provider's RedisHook passes
#: the same names to ``redis.Redis``).
REDIS_SSL_EXTRAS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def redis_client(location: StoreLocation) -> Any:
    """A redis client configured by an Airflow Redis connection (fields as RedisHook reads
    them: host, port, login, password; extra ``db``, ``ssl`` and the ``ssl_*`` settings), with
    the store options ``[xcomstash] redis_chunk_size`` and ``redis_ttl``."""
    import redis
    from airflow.sdk import BaseHook

    from xcomstash.errors import ConfigError
    from xcomstash.security.transport import is_loopback
    from xcomstash.stores.redis import DEFAULT_CHUNK_SIZE, ConfiguredRedis, client_options

    conn_id = conn_id_of(location)
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    host = conn.host or "localhost"
    tls = _flag(extra.get("ssl", False))
    if not tls and not (allow_http() and is_loopback(host)):
        raise ConfigError(
            f"Redis connection {conn_id!r} ({host}) does not use TLS: set \"ssl\": true in its extra. "
            "Plain connections are allowed only to this machine with [xcomstash] allow_http_endpoints = True"
        )
    password = None if str(conn.password).lower() in ("none", "false", "") else conn.password
    ssl_options = {name: extra[name] for name in REDIS_SSL_EXTRAS if name in extra} if tls else {}
    if "ssl_check_hostname" in ssl_options:
        ssl_options["ssl_check_hostname"] = _flag(ssl_options["ssl_check_hostname"])
    client = redis.Redis(
        host=host,
        port=int(conn.port or 6379),
        username=conn.login or None,
        password=password,
        db=int(extra.get("db") or 0),
        ssl=tls,
        **ssl_options,
        **client_options(),
    )
    conf = _conf()
    ttl = conf.getfloat(SECTION, "redis_ttl", fallback=0.0)
    return ConfiguredRedis(
        client,
        chunk_size=conf.getint(SECTION, "redis_chunk_size", fallback=DEFAULT_CHUNK_SIZE),
        ttl=ttl if ttl > 0 else None,
    )


def _flag(value: Any) -> bool:
    """A connection extra's boolean, which JSON or the UI may give as a string."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)
