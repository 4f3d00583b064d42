"""Store clients from Airflow connections: the credentials of a store URL's location.

A store URL may name a connection (``s3://my_conn@bucket/prefix``); otherwise each kind uses
the default connection its Airflow provider uses (``aws_default``, ``google_cloud_default``,
``wasb_default``, ``redis_default``). Every endpoint must use TLS unless
``[xcomstash] allow_http_endpoints`` is on and the endpoint is on this machine.
"""

from __future__ import annotations

import json
import os
from typing import Any

from xcomstash.errors import ConfigError
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
    builders = {"s3": s3_client, "gcs": gcs_client, "azure": azure_client, "redis": redis_client}
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
    if location.conn_id is not None:
        _require_connection(conn_id, location)
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


def _require_connection(conn_id: str, location: StoreLocation) -> None:
    """A connection the URL names must exist: Airflow's hooks would otherwise fall back to
    ambient credentials (or none) and the error would blame the store."""
    from airflow.sdk import BaseHook

    from xcomstash.airflow.compat import not_found_error
    from xcomstash.errors import ConfigError

    AirflowNotFoundException = not_found_error()

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConfigError(
            f"Airflow connection {conn_id!r} (named in store_url {location.url or conn_id!r}) is not defined: "
            f"create it (airflow connections add {conn_id} ..., or AIRFLOW_CONN_{conn_id.upper()}) "
            "or name another one"
        ) from None


def _flag(value: Any) -> bool:
    """A connection extra's boolean, which JSON or the UI may give as a string."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)
#: The Google provider's default scope.
GOOGLE_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: Google connection fields the provider knows and xcomstash does not read.
UNSUPPORTED_GOOGLE_FIELDS = ("credential_config_file", "key_secret_name", "impersonation_chain")
#: google-cloud-storage's endpoint overrides: an emulator (anonymous), or another endpoint.
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
ENDPOINT_ENV = "API_ENDPOINT_OVERRIDE"


def gcs_client(location: StoreLocation) -> Any:
    """A google-cloud-storage ``Client`` configured by an Airflow Google connection, with the
    store options ``[xcomstash] gcs_retry_timeout`` and ``gcs_chunk_size``.

    Read as the Google provider reads it (the provider itself need not be installed): extras
    ``key_path`` (a service-account JSON file), ``keyfile_dict`` (its contents, a JSON string
    or a dict), ``scope`` (comma-separated), ``project`` and ``is_anonymous``, each also under
    its older ``extra__google_cloud_platform__`` name; without a key, application default
    credentials (``google.auth.default()``). The default connection ``google_cloud_default``
    may be left undefined (application default credentials then, as on GKE with Workload
    Identity); a connection the URL names must exist.

    ``STORAGE_EMULATOR_HOST`` (honoured by google-cloud-storage) points the client at an
    emulator, with anonymous credentials; ``API_ENDPOINT_OVERRIDE`` (also honoured) another
    endpoint, with the connection's credentials. Either must pass
    :func:`~xcomstash.security.transport.check_endpoint`.
    """
    from google.cloud import storage

    from xcomstash.security.transport import check_endpoint

    from xcomstash.stores.gcs import CHUNK_SIZE, DEFAULT_RETRY_TIMEOUT, ConfiguredGCS

    conn_id = conn_id_of(location)
    extras = _google_extras(conn_id, named=location.conn_id is not None)
    conf = _conf()
    options = {
        "retry_timeout": conf.getfloat(SECTION, "gcs_retry_timeout", fallback=DEFAULT_RETRY_TIMEOUT),
        "chunk_size": conf.getint(SECTION, "gcs_chunk_size", fallback=CHUNK_SIZE),
    }

    def field(name: str) -> Any:
        return extras.get(name) or extras.get(f"extra__google_cloud_platform__{name}")

    project = field("project") or None
    emulator = os.environ.get(EMULATOR_ENV)
    if emulator:
        check_endpoint(emulator, allow_http=allow_http(), what=f"GCS emulator endpoint ({EMULATOR_ENV})")
        from google.auth.credentials import AnonymousCredentials

        client = storage.Client(project=project, credentials=AnonymousCredentials())
    else:
        check_endpoint(os.environ.get(ENDPOINT_ENV), allow_http=allow_http(), what=f"GCS endpoint ({ENDPOINT_ENV})")
        credentials, found_project = _google_credentials(field, conn_id)
        client = storage.Client(project=project or found_project, credentials=credentials)
    return ConfiguredGCS(client, **options)


def _google_extras(conn_id: str, *, named: bool) -> dict[str, Any]:
    """The connection's extras; ``{}`` when the default connection is not defined."""
    from airflow.sdk import BaseHook

    from xcomstash.airflow.compat import not_found_error

    AirflowNotFoundException = not_found_error()
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        if named:
            raise ConfigError(f"Google connection {conn_id!r} named in the store URL is not defined") from None
        return {}
    extras = connection.extra_dejson
    return extras if isinstance(extras, dict) else {}


def _google_credentials(field: Any, conn_id: str) -> tuple[Any, str | None]:
    """Credentials and the project they name, from the connection's key or the environment."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials
    from google.auth.exceptions import DefaultCredentialsError
    from google.oauth2 import service_account

    scope = field("scope")
    scopes = [s.strip() for s in scope.split(",") if s.strip()] if isinstance(scope, str) else []
    scopes = scopes or list(GOOGLE_SCOPES)
    key_path, keyfile = field("key_path"), field("keyfile_dict")
    unsupported = [name for name in UNSUPPORTED_GOOGLE_FIELDS if field(name)]
    if unsupported:  # falling back to other credentials would act as another identity
        raise ConfigError(
            f"Google connection {conn_id!r} sets {', '.join(unsupported)}, which xcomstash does not "
            "support: use key_path, keyfile_dict or application default credentials"
        )
    if str(field("is_anonymous") or "").lower() in ("true", "1"):
        return AnonymousCredentials(), None
    if key_path and keyfile:
        raise ConfigError(f"Google connection {conn_id!r}: key_path and keyfile_dict are mutually exclusive")
    try:
        if key_path:
            if not str(key_path).endswith(".json"):
                raise ConfigError(
                    f"Google connection {conn_id!r}: key_path must be a service-account .json file "
                    "(legacy P12 keys are not supported)"
                )
            credentials = service_account.Credentials.from_service_account_file(key_path, scopes=scopes)
            return credentials, credentials.project_id
        if keyfile:
            info = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
            credentials = service_account.Credentials.from_service_account_info(info, scopes=scopes)
            return credentials, credentials.project_id
        return google.auth.default(scopes=scopes)
    except ConfigError:
        raise
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Google connection {conn_id!r}: keyfile_dict is not valid JSON ({exc.msg})") from None
    except DefaultCredentialsError as exc:
        raise ConfigError(
            f"Google connection {conn_id!r} has no key and no application default credentials: {exc}"
        ) from None
    except (OSError, ValueError, KeyError) as exc:  # unreadable file, malformed key
        raise ConfigError(
            f"Google connection {conn_id!r}: cannot load the service-account key: {type(exc).__name__}: {exc}"
        ) from None
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
