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
    builders = {"s3": s3_client}
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
