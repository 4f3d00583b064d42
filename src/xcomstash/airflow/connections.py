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
    builders = {"s3": s3_client, "azure": azure_client}
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


def _wasb_field(extra: dict[str, Any], name: str) -> Any:
    """An extra field as WasbHook reads it: ``name``, or the legacy ``extra__wasb__name``."""
    return extra.get(name) or extra.get(f"extra__wasb__{name}") or None


def _wasb_account_url(host: str | None, login: str | None) -> str:
    """The account URL of a wasb connection: its host (an emulator URL, or a DNS name without
    scheme, which gets https://), else ``https://<login>.blob.core.windows.net``."""
    if not host:
        return f"https://{login}.blob.core.windows.net"
    return host if "://" in host else f"https://{host}"


def azure_client(location: StoreLocation) -> Any:
    """A ``BlobServiceClient`` configured by an Airflow ``wasb`` connection, read the way the
    Azure provider's WasbHook reads it (the provider itself need not be installed):

    - extra ``connection_string`` (takes priority);
    - host = account URL (default ``https://<login>.blob.core.windows.net``), with extra
      ``shared_access_key``, or extra ``sas_token`` (a full URL, or a token appended to the
      account URL), or password = account key (or extra ``account_key``).

    Active Directory (extra ``tenant_id``) and managed identities need ``azure-identity``,
    which xcomstash does not install: refused with a :class:`ConfigError` saying so.
    """
    from airflow.sdk import BaseHook

    from xcomstash.errors import ConfigError
    from xcomstash.security.transport import check_endpoint
    from xcomstash.stores.azure import check_account, service_client

    conn_id = conn_id_of(location)
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    connection_string = _wasb_field(extra, "connection_string")
    if connection_string:
        client = service_client(connection_string=connection_string)
    else:
        account_url = _wasb_account_url(conn.host, conn.login)
        if not conn.host and not conn.login:
            raise ConfigError(
                f"Azure connection {conn_id!r} names no account: set extra connection_string, or "
                "login (account name) and password (account key), or host (account URL) and a sas_token"
            )
        if _wasb_field(extra, "tenant_id"):
            raise ConfigError(
                f"Azure connection {conn_id!r} uses Active Directory (tenant_id), which needs "
                "azure-identity (not installed with xcomstash): use a connection string, an account "
                "key or a SAS token"
            )
        shared_access_key = _wasb_field(extra, "shared_access_key")
        sas_token = _wasb_field(extra, "sas_token")
        key = conn.password or _wasb_field(extra, "account_key")
        if shared_access_key:
            client = service_client(account_url=account_url, credential=shared_access_key)
        elif sas_token:
            if sas_token.startswith(("https://", "http://")):
                url = sas_token  # the account URL with the token
            else:
                url = f"{account_url.rstrip('/')}/?{sas_token.lstrip('/?')}"
            client = service_client(account_url=url)
        elif key:
            client = service_client(account_url=account_url, credential=key)
        else:
            raise ConfigError(
                f"Azure connection {conn_id!r} has no credentials: set password (account key), or "
                "extra connection_string, sas_token or shared_access_key (managed identities need "
                "azure-identity, which xcomstash does not install)"
            )
    endpoint = client.url.split("?", 1)[0]  # never put a SAS token into an error message
    check_endpoint(endpoint, allow_http=allow_http(), what=f"Azure Blob endpoint of connection {conn_id!r}")
    check_account(location, client.account_name, f"connection {conn_id!r}")
    return client
