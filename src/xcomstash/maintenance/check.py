"""Preflight checks of a deployment, as this host sees it: what ``xcomstash check`` prints and
the plugin's overview page shows.

Each check gives one :class:`CheckResult`: ``ok``, ``warn`` (works, but something deserves a
look) or ``fail`` (values will not be pushed or pulled from here), with a ``fix`` saying what
to change. :func:`run_checks` never raises for a failed check: a store that cannot be reached
is a ``fail`` line naming it, and the checks of the other locations still run.

What is checked:

- every store location (each location of a replicated ``store_url``, and of each per-DAG
  store in ``dag_policies``): opened with this host's credentials, then a probe object is
  written, read back and deleted (see :func:`probe`);
- the transport to each remote location: TLS, and how long its certificate is still valid;
- the read cache of remote stores (``cache_dir``): writable, with room for ``cache_max_bytes``;
- clocks: each service's time where it reports one (the S3, GCS and Azure ``Date`` header,
  Redis ``TIME``) and the metadata database's, against this host's;
- keys: each configured keyset is present, readable by this user only, and parses; the
  keysets' DAG patterns cover the patterns of ``dag_policies``.

Probe objects live under :data:`PROBE_PREFIX`, which reconcile and stats skip, and are deleted
at once, also when reading them back failed.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping
from urllib.parse import urlsplit

from xcomstash.config import StashConfig
from xcomstash.errors import ConfigError, ProbeError
from xcomstash.format.keyspace import PROBE_PREFIX
from xcomstash.security.transport import is_loopback
from xcomstash.stores import ClientFactory, Store, StoreLocation, open_store, parse_store_url, store_urls

__all__ = [
    "CheckResult",
    "KeysetSettings",
    "PROBE_PREFIX",
    "OK",
    "WARN",
    "FAIL",
    "cache_check",
    "check_endpoint_tls",
    "database_clock_check",
    "keyset_checks",
    "probe",
    "run_checks",
]


OK, WARN, FAIL = "ok", "warn", "fail"

#: Clock offsets (seconds) from which a clock check warns and fails. S3 and GCS refuse requests
#: signed 15 minutes off; reconcile and retention age objects by the store's clock.
CLOCK_WARN_SECONDS = 30.0
CLOCK_FAIL_SECONDS = 300.0
#: A certificate that expires within this many days is a warning.
CERT_WARN_DAYS = 21
#: Seconds allowed for one TLS handshake of the certificate check.
TLS_TIMEOUT = 5.0
#: Seconds the checks of all store locations (run at once) may take before an unfinished one
#: is reported as failed.
LOCATION_TIMEOUT = 60.0


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: what was checked, how it went, and what to do about it."""

    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class KeysetSettings:
    """The key options of the deployment, as the keyset checks need them (the Airflow adapter
    reads them from ``[xcomstash]``)."""

    #: ``[xcomstash] keysets``: ``pattern=source`` entries (``file:``, ``env:``, ``variable:``).
    spec: str = ""
    #: ``[xcomstash] sign_references`` (``None``: auto).
    sign_references: bool | None = None
    #: Where a single-machine deployment's keyset is created when none is configured
    #: (``None``: not known here).
    default_path: str | None = None
    #: The DAG patterns of ``dag_policies``: each must be covered by a keyset pattern.
    dag_patterns: tuple[str, ...] = ()


# ------------------------------------------------------------------------------ the probe


def probe(store: Store, *, size: int = 4096) -> float:
    """Write ``size`` random bytes under :data:`PROBE_PREFIX`, read them back, delete them and
    make sure they are gone; the seconds it took. Raises :class:`ProbeError` naming the
    location and the step that failed. The object is deleted whatever happened before (a
    failed read back included); if it cannot be, the error says where it was left."""
    where = store.root_uri
    # At the root of the store (no directory left behind on disk), under a reserved name.
    key = f"{PROBE_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(6)}.probe"
    payload = secrets.token_bytes(size)
    started = time.perf_counter()
    error: ProbeError | None = None
    written = False
    try:
        try:
            with store.writer(key) as pending:
                pending.write(payload)
            written = True
        except Exception as exc:
            raise ProbeError(_describe(exc), location=where, step="write") from exc
        try:
            got = store.get(key)
        except Exception as exc:
            raise ProbeError(_describe(exc), location=where, step="read back") from exc
        if got != payload:
            raise ProbeError(
                f"read back {len(got)} bytes that differ from the {len(payload)} written", location=where, step="read back"
            )
    except ProbeError as exc:
        error = exc
    except BaseException:  # interrupted (Ctrl-C, the check's deadline): still leave nothing behind
        _remove(store, key, True)
        raise
    left = _remove(store, key, written)
    if error is not None:
        if left:
            raise ProbeError(f"{error.reason}; and {left}", location=where, step=error.step) from error
        raise error
    if left:
        raise ProbeError(left, location=where, step="delete")
    return time.perf_counter() - started


def _remove(store: Store, key: str, written: bool) -> str:
    """Delete the probe object and check it is gone; what went wrong, or ``""``. After a
    failed write there is only something to delete if the store shows the object."""
    if not written:
        try:
            if store.head(key) is None:
                return ""
        except Exception:
            return ""  # the write failed and the store cannot be asked: nothing was published
    try:
        store.delete(key)
        if store.head(key) is not None:
            return f"the probe object {store.uri_for(key)} is still there after its deletion"
    except Exception as exc:
        return f"the probe object {store.uri_for(key)} could not be deleted ({_describe(exc)})"
    return ""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _host() -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:60] or "host"


# ------------------------------------------------------------------------------ locations


@dataclass(frozen=True)
class _Location:
    url: str
    role: str  # "store_url", "store_url location 2", "dag_policies 'pii_*'"


def _locations(config: StashConfig) -> list[_Location]:
    """Every store location the configuration names, each once, in the order of the config."""
    out: list[_Location] = []
    seen: set[str] = set()

    def add(url: str, role: str) -> None:
        urls = store_urls(url)
        for n, one in enumerate(urls):
            if one not in seen:
                seen.add(one)
                out.append(_Location(one, role if len(urls) == 1 else f"{role} location {n + 1} of {len(urls)}"))

    add(config.store_url, "store_url")
    for pattern, url in config.dag_stores:
        if url:
            add(url, f"dag_policies {pattern!r}")
    return out


def _setting(role: str) -> str:
    """The option that names a location: ``[xcomstash] store_url``, or a dag_policies entry's."""
    if role.startswith("dag_policies"):
        return f"the store_url of the {role.split(' location ')[0]} entry"
    return "[xcomstash] store_url"


def _open_fix(location: StoreLocation, role: str) -> str:
    if location.kind == "file":
        return f"create {location.path} (writable by {_user()}) or point {_setting(role)} at a directory that exists"
    named = f"the Airflow connection {location.conn_id!r} it names" if location.conn_id else "its kind's default Airflow connection"
    return (
        f"check the URL {location.url} and {named} (airflow connections get <conn_id>): endpoint, credentials, "
        "and [xcomstash] allow_http_endpoints for a plain-HTTP server on this machine"
    )


def _write_fix(location: StoreLocation, root: str, role: str) -> str:
    if location.kind == "file":
        return (
            f"make {location.path} a directory writable by {_user()} on every host that pushes or reads "
            f"(mkdir -p {location.path} && chown {_user()} {location.path}), or point {_setting(role)} elsewhere"
        )
    grants = {
        "s3": f"s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on {root}",
        "gcs": f"roles/storage.objectUser (create, get, delete, list objects) on {root}",
        "azure": f"read, add, create, write, delete and list on the container of {root} (a SAS with 'racwdl', or a "
        "Storage Blob Data Contributor role)",
        "redis": "the commands SET, GET, DEL, EVALSHA and SCAN on the keys under the prefix (Redis ACL), and room "
        "below maxmemory",
    }
    return (
        f"make sure this host reaches the service (network, firewall, proxy) and that the credentials it uses "
        f"may {grants.get(location.kind, 'write, read and delete objects')}"
    )


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return f"uid {os.geteuid()}"


def _location_checks(
    loc: _Location,
    clients: ClientFactory | None,
    now: Callable[[], float],
    clock_warn: float,
    clock_fail: float,
) -> list[CheckResult]:
    name = f"store {loc.url}"
    location = parse_store_url(loc.url)
    try:
        store = open_store(loc.url, clients=clients)
    except Exception as exc:
        return [CheckResult(name, FAIL, f"{loc.role}: cannot open the store: {_describe(exc)}", _open_fix(location, loc.role))]
    try:
        results: list[CheckResult] = []
        try:
            seconds = probe(store)
            results.append(
                CheckResult(name, OK, f"{loc.role}: wrote, read back and deleted a probe object ({seconds * 1000:.0f} ms)")
            )
        except ProbeError as exc:
            fix = _write_fix(location, store.root_uri, loc.role)
            if exc.step == "read back":
                fix = (
                    "the store took the write but did not serve it back: check read permission on "
                    f"{store.root_uri} and any proxy or gateway in front of the service; " + fix
                )
            elif exc.step == "delete":
                fix = f"allow deleting objects under {store.root_uri} (maintenance and purges need it); " + fix
            results.append(CheckResult(name, FAIL, f"{loc.role}: {exc}", fix))
        tls = _tls_check(loc.url, store)
        if tls is not None:
            results.append(tls)
        clock = _store_clock_check(loc.url, store, now, clock_warn, clock_fail)
        if clock is not None:
            results.append(clock)
        return results
    finally:
        try:
            store.close()
        except Exception:
            pass


# ------------------------------------------------------------------------------- transport


def _tls_check(url: str, store: Store) -> CheckResult | None:
    """``None`` for a store on this machine's disk."""
    try:
        endpoint = store.endpoint()
    except Exception as exc:
        return CheckResult(f"tls {url}", WARN, f"cannot tell which endpoint the client uses: {_describe(exc)}")
    if not endpoint:
        if store.capabilities.local:
            return None
        # The SDK's default endpoint: HTTPS for every service we use.
        return CheckResult(f"tls {url}", OK, "the service's default endpoint (HTTPS)")
    return check_endpoint_tls(f"tls {url}", endpoint)


def check_endpoint_tls(name: str, endpoint: str, *, now: Callable[[], float] = time.time) -> CheckResult:
    """TLS for ``endpoint`` (``https://``, ``rediss://``: the certificate's expiry; ``http://``,
    ``redis://``: plain, tolerated on loopback only; ``unix://``: this machine)."""
    parts = urlsplit(endpoint)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme == "unix":
        return CheckResult(name, OK, f"{endpoint}: a Unix socket on this machine")
    if scheme in ("http", "redis"):
        if is_loopback(host):
            return CheckResult(
                name, WARN, f"{endpoint}: plain (no TLS) to this machine, as [xcomstash] allow_http_endpoints permits",
                "fine for a local test server or sidecar; any other deployment should use an https:// (rediss) endpoint",
            )
        return CheckResult(
            name, FAIL, f"{endpoint}: plain (no TLS) to another machine: values and credentials cross the network unencrypted",
            "use the service's https:// endpoint in the connection (for Redis, \"ssl\": true in its extra)",
        )
    if scheme not in ("https", "rediss"):
        return CheckResult(name, WARN, f"{endpoint}: unknown scheme {scheme!r}, TLS not checked")
    port = parts.port or (443 if scheme == "https" else 6379)
    try:
        expires = _certificate_expiry(host, port)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return CheckResult(
            name, WARN, f"{endpoint}: could not read the server's certificate ({_describe(exc)})",
            "see the store line: if the probe succeeded, the client's own TLS handshake worked",
        )
    days = (expires - now()) / 86400
    until = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%d")
    if days < 0:
        return CheckResult(
            name, FAIL, f"{endpoint}: the server's certificate expired on {until}",
            f"renew the certificate of {host}",
        )
    if days < CERT_WARN_DAYS:
        return CheckResult(
            name, WARN, f"{endpoint}: TLS; the server's certificate expires in {days:.0f} days ({until})",
            f"renew the certificate of {host} before {until}",
        )
    return CheckResult(name, OK, f"{endpoint}: TLS; certificate valid until {until}")


def _certificate_expiry(host: str, port: int) -> float:
    """When the certificate ``host:port`` presents expires (POSIX seconds). Read without
    verifying it: whether the client trusts it is what the probe shows; this says for how long."""
    from cryptography import x509

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=TLS_TIMEOUT) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ValueError("no certificate presented")
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


# ---------------------------------------------------------------------------------- clocks


def _clock_result(
    name: str, what: str, server: float, before: float, after: float, warn: float, fail: float, resolution: float
) -> CheckResult:
    """Compare a clock read between ``before`` and ``after`` (this host's time) with it."""
    offset = server - (before + after) / 2
    slack = resolution + (after - before) / 2
    shown = f"{what}'s clock is {abs(offset):.1f} s {'ahead of' if offset > 0 else 'behind'} this host's"
    beyond = abs(offset) - slack
    fix = (
        "synchronise this host's clock (NTP: timedatectl set-ntp true, or chrony); "
        f"if this host's clock is right, {what}'s is off"
    )
    if beyond > fail:
        return CheckResult(
            name, FAIL,
            f"{shown}: S3 and GCS refuse requests signed 15 minutes off, and reconcile and retention age objects "
            "by the store's clock",
            fix,
        )
    if beyond > warn:
        return CheckResult(name, WARN, f"{shown} (more than {warn:.0f} s)", fix)
    return CheckResult(name, OK, f"{shown} (its resolution and the round trip allow {slack:.1f} s)")


def _store_clock_check(
    url: str, store: Store, now: Callable[[], float], warn: float, fail: float
) -> CheckResult | None:
    if store.capabilities.local:
        return None  # this host's own clock
    name = f"clock {url}"
    try:
        before = now()
        server = store.server_time()
        after = now()
    except Exception as exc:
        return CheckResult(name, WARN, f"cannot read the store's time: {_describe(exc)}", "see the store line")
    if server is None:
        return CheckResult(name, OK, "the service reports no time: not checked")
    return _clock_result(name, "the store", server, before, after, warn, fail, 1.0)


def database_clock_check(
    database_time: Callable[[], float], *, now: Callable[[], float] = time.time,
    warn: float = CLOCK_WARN_SECONDS, fail: float = CLOCK_FAIL_SECONDS,
) -> CheckResult:
    name = "clock database"
    try:
        before = now()
        server = database_time()
        after = now()
    except Exception as exc:
        return CheckResult(
            name, WARN, f"the metadata database is not reachable from this host ({_describe(exc)[:300]})",
            "nothing to do on a worker (Airflow 3 tasks do not use the database); on the scheduler or API server, "
            "check [database] sql_alchemy_conn",
        )
    return _clock_result(name, "the metadata database", server, before, after, warn, fail, 1.0)


# ----------------------------------------------------------------------------- read cache


def cache_check(cache_dir: str, max_bytes: int) -> CheckResult:
    """The read cache of remote stores: a directory this user may write, on a filesystem with
    room for ``max_bytes`` (the cache evicts down to it, but a disk that fills first fails the
    pulls that fill the cache). A directory that does not exist yet is left alone: the first
    pull creates it, so its nearest existing parent must be writable."""
    import shutil
    import tempfile

    from xcomstash.maintenance.report import human_bytes

    name = f"cache {cache_dir}"
    fix = f"make {cache_dir} writable by {_user()}, or set [xcomstash] cache_dir to another directory (or off)"
    existing = cache_dir
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        if existing == cache_dir:
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-check-")
            os.close(fd)
            os.unlink(tmp)
            state = "writable"
        elif os.access(existing, os.W_OK | os.X_OK):
            state = f"created on first use (in {existing}, writable)"
        else:
            return CheckResult(name, FAIL, f"{cache_dir} does not exist and {existing} is not writable by {_user()}", fix)
        free = shutil.disk_usage(existing).free
    except OSError as exc:
        return CheckResult(name, FAIL, f"cannot write in {cache_dir}: {exc.strerror or exc}", fix)
    if free < max_bytes:
        return CheckResult(
            name, WARN,
            f"{state}; {human_bytes(free)} free on its filesystem, less than cache_max_bytes ({human_bytes(max_bytes)})",
            "free space there, lower [xcomstash] cache_max_bytes, or move cache_dir to a larger filesystem",
        )
    return CheckResult(name, OK, f"{state}; {human_bytes(free)} free, cache bounded to {human_bytes(max_bytes)}")


# ------------------------------------------------------------------------------------ keys


def keyset_checks(
    settings: KeysetSettings,
    *,
    store_is_local: bool,
    store_url: str,
    resolvers: Mapping[str, Callable[[str], str]] | None = None,
) -> list[CheckResult]:
    """Each configured keyset source (present, private, parses) and the coverage of the DAG
    patterns; without keysets, what the deployment does instead."""
    from xcomstash.security.crypto.keyset import parse_scoped_sources

    spec = settings.spec.strip()
    if not spec:
        return [_no_keysets(settings, store_is_local, store_url)]
    entries = parse_scoped_sources(spec)
    results = [_keyset_source(pattern, source, resolvers) for pattern, source in entries]
    results.append(_coverage([p for p, _ in entries], settings.dag_patterns))
    return results


def _no_keysets(settings: KeysetSettings, store_is_local: bool, store_url: str) -> CheckResult:
    name = "keyset"
    if settings.sign_references is False:
        return CheckResult(
            name, WARN,
            "no keysets, and sign_references = false: anyone who may write XComs (REST API, SQL) can point a "
            "task at another value",
            "create a keyset (xcomstash keys generate /path/keyset.json) and set [xcomstash] keysets = file:/path/keyset.json",
        )
    if not store_is_local:
        return CheckResult(
            name, FAIL,
            f"no keysets, and the store {store_url} is shared between machines: pushes fail until references can be "
            "signed with keys every worker holds",
            "create a keyset (xcomstash keys generate /path/keyset.json), give every worker and the API server a "
            "copy, and set [xcomstash] keysets = file:/path/keyset.json (or env:/variable:); or opt out with "
            "[xcomstash] sign_references = false",
        )
    path = settings.default_path
    if not path:
        return CheckResult(name, OK, "no keysets configured: a single-machine keyset is created on first use")
    if not os.path.exists(path):
        return CheckResult(name, OK, f"no keysets configured: the single-machine keyset {path} is created on first use")
    result = _keyset_file(name, path)
    if result.status == OK:
        return CheckResult(name, OK, f"no keysets configured; the single-machine keyset {result.detail}")
    return result


def _keyset_source(pattern: str, source: str, resolvers: Mapping[str, Callable[[str], str]] | None) -> CheckResult:
    from xcomstash.security.crypto.keyset import BUILTIN_RESOLVERS, Keyset

    name = f"keyset {pattern}"
    kind, _, arg = source.partition(":")
    if kind == "file":
        return _keyset_file(name, arg)
    table = {**BUILTIN_RESOLVERS, **(resolvers or {})}
    if kind not in table:
        if kind == "variable":
            return CheckResult(name, WARN, f"{source}: an Airflow Variable, not checked outside Airflow")
        return CheckResult(
            name, FAIL, f"{source!r:.80}: unknown keyset source", "use file:/path, env:NAME or variable:NAME in [xcomstash] keysets"
        )
    try:
        keyset = Keyset.from_json(table[kind](arg), source=f"keyset {source}")
    except ConfigError as exc:
        fix = {
            "env": f"set {arg} to the keyset's JSON in the environment of every Airflow process on this host",
            "variable": f"create the Airflow Variable {arg} with the keyset's JSON (airflow variables set {arg} ...)",
        }.get(kind, "provide the keyset")
        return CheckResult(name, FAIL, str(exc), fix)
    return CheckResult(name, OK, f"{source}: {_keyset_summary(keyset)}")


def _keyset_file(name: str, path: str) -> CheckResult:
    from xcomstash.security.crypto.keyset import read_keyset_file

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return CheckResult(
            name, FAIL, f"keyset file {path} does not exist",
            f"copy the deployment's keyset to {path} (chmod 600, owned by {_user()}), or create a new one with "
            f"xcomstash keys generate {path} if this deployment has none yet",
        )
    except OSError as exc:
        return CheckResult(name, FAIL, f"keyset file {path}: {exc.strerror}", f"make {path} readable by {_user()}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IRWXO:
        return CheckResult(
            name, FAIL, f"keyset file {path} is readable by other users (mode {mode:04o}); it holds every key secret",
            f"chmod 600 {path}",
        )
    try:
        keyset = read_keyset_file(path)
    except ConfigError as exc:
        return CheckResult(name, FAIL, str(exc), f"make {path} readable by {_user()} and a keyset document (xcomstash keys)")
    if st.st_uid != os.geteuid():
        return CheckResult(
            name, WARN, f"keyset file {path} is owned by uid {st.st_uid}, not by this user ({_user()}, uid {os.geteuid()})",
            f"chown {_user()} {path}: the keys should be readable by the user Airflow runs as only",
        )
    if mode & stat.S_IRWXG:
        return CheckResult(
            name, WARN, f"keyset file {path} is readable by its group (mode {mode:04o}): {_keyset_summary(keyset)}",
            f"chmod 600 {path}, unless the group is meant to hold the keys",
        )
    return CheckResult(name, OK, f"file:{path} (mode {mode:04o}): {_keyset_summary(keyset)}")


def _keyset_summary(keyset: object) -> str:
    keys = getattr(keyset, "keys", ())
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''}, primary {getattr(keyset, 'primary_id', '?')}"


def _coverage(keyset_patterns: list[str], dag_patterns: tuple[str, ...]) -> CheckResult:
    name = "keyset coverage"
    uncovered = [p for p in dag_patterns if not any(fnmatch.fnmatchcase(p, q) for q in keyset_patterns)]
    shown = ", ".join(keyset_patterns)
    if uncovered:
        return CheckResult(
            name, FAIL,
            f"dag_policies patterns {', '.join(map(repr, uncovered))} match no keyset pattern ({shown}): their "
            "values cannot be signed or encrypted",
            "add '" + "; ".join(f"{p}=file:/path/keyset.json" for p in uncovered) + "' to [xcomstash] keysets",
        )
    shadowed = [
        (later, earlier)
        for j, later in enumerate(keyset_patterns)
        for earlier in keyset_patterns[:j]
        if fnmatch.fnmatchcase(later, earlier)
    ]
    if shadowed:
        later, earlier = shadowed[0]
        return CheckResult(
            name, WARN,
            f"keyset pattern {later!r} comes after {earlier!r}, which matches its DAGs first: its keyset is never used",
            f"list {later!r} before {earlier!r} in [xcomstash] keysets (the first matching pattern decides)",
        )
    if not any(set(q) == {"*"} for q in keyset_patterns):
        return CheckResult(
            name, WARN,
            f"DAGs that match none of the keyset patterns ({shown}) have no keyset: their pushes fail when their "
            "references are signed",
            "add a last entry '*=file:/path/keyset.json' to [xcomstash] keysets, or run only DAGs these patterns match",
        )
    return CheckResult(name, OK, f"every DAG has a keyset ({shown})")


# -------------------------------------------------------------------------------- run all


def run_checks(
    config: StashConfig,
    *,
    clients: ClientFactory | None = None,
    keysets: KeysetSettings | None = None,
    resolvers: Mapping[str, Callable[[str], str]] | None = None,
    database_time: Callable[[], float] | None = None,
    now: Callable[[], float] = time.time,
    clock_warn: float = CLOCK_WARN_SECONDS,
    clock_fail: float = CLOCK_FAIL_SECONDS,
    location_timeout: float = LOCATION_TIMEOUT,
) -> list[CheckResult]:
    """Every check of this deployment from this host, in a stable order: the configuration,
    then per store location its probe, TLS and clock, then the read cache, keys, and the
    database clock.

    ``clients`` builds each remote location's service client (the Airflow adapter reads
    Airflow connections); ``keysets`` the key options (``None``: keys not checked);
    ``resolvers`` keyset sources beyond ``file:`` and ``env:``; ``database_time`` returns
    the metadata database's clock (``None``: not checked); ``now`` this host's clock;
    ``location_timeout`` how long the checks of the store locations (run at once) may take
    in all before an unfinished one is a ``fail`` line."""
    locations = _locations(config)
    stores = len(store_urls(config.store_url))
    summary = f"store_url: {stores} location{'s' if stores != 1 else ''}"
    if stores > 1:
        summary += f", write_quorum {config.write_quorum or stores}"
    dag_stores = [p for p, url in config.dag_stores if url]
    if dag_stores:
        summary += f"; per-DAG stores for {', '.join(map(repr, dag_stores))}"
    results = [CheckResult("config", OK, summary)]
    # Locations are checked at once, each in a thread of its own: one that is down costs its
    # timeout once, not in turn, and none is waited for beyond ``location_timeout``.
    deadline = time.monotonic() + location_timeout
    runs = [
        _Background(_guarded, f"store {loc.url}", _location_checks, loc, clients, now, clock_warn, clock_fail)
        for loc in locations
    ]
    for loc, run in zip(locations, runs):
        outcome = run.wait(max(0.0, deadline - time.monotonic()))
        if outcome is None:
            outcome = [CheckResult(
                f"store {loc.url}", FAIL,
                f"{loc.role}: no answer within {location_timeout:g} s (opening the store, or its probe, is still waiting)",
                "make sure this host reaches the service (network, firewall, proxy, DNS) and that the connection names "
                "the right endpoint",
            )]
        results.extend(outcome)
    local = all(parse_store_url(loc.url).kind == "file" for loc in locations)
    if config.cache_dir and not local:  # a local store is never cached
        results.extend(_guarded("cache", lambda: [cache_check(config.cache_dir or "", config.cache_max_bytes)]))
    if keysets is not None:
        results.extend(
            _guarded("keyset", keyset_checks, keysets, store_is_local=local, store_url=config.store_url, resolvers=resolvers)
        )
    if database_time is not None:
        results.append(database_clock_check(database_time, now=now, warn=clock_warn, fail=clock_fail))
    return results


class _Background:
    """A function run in a daemon thread: a location that hangs must not keep the command (or
    the API server's request) waiting, nor the process from exiting."""

    def __init__(self, function: Callable[..., list[CheckResult]], *args: object) -> None:
        self._result: list[CheckResult] | None = None
        self._done = threading.Event()

        def run() -> None:
            try:
                self._result = function(*args)
            finally:
                self._done.set()

        threading.Thread(target=run, name="xcomstash-check", daemon=True).start()

    def wait(self, timeout: float) -> list[CheckResult] | None:
        return self._result if self._done.wait(timeout) else None


def _guarded(name: str, check: Callable[..., list[CheckResult]], *args: object, **kwargs: object) -> list[CheckResult]:
    """A check that raised is a ``fail`` line, never an exception out of :func:`run_checks`."""
    try:
        return check(*args, **kwargs)
    except Exception as exc:
        return [CheckResult(name, FAIL, f"the check itself failed: {_describe(exc)}", "report this as a bug of xcomstash check")]
