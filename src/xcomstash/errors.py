"""One exception hierarchy for everything xcomstash raises.

Callers catch :class:`XComStashError` for "anything from xcomstash", or one of the
subclasses when they care why. Read-side errors always carry the XCom coordinate and the
object URI, so a failing task log says which value could not be read and where it lived.
"""

from __future__ import annotations


class XComStashError(Exception):
    """Base class of every error xcomstash raises."""


class ConfigError(XComStashError):
    """The ``[xcomstash]`` configuration (or an explicit config object) is invalid."""


class UnsupportedTypeError(XComStashError, TypeError):
    """A value's type has no codec, so it cannot be stored without pickle (which we never use)."""

    def __init__(self, type_name: str, detail: str = "") -> None:
        self.type_name = type_name
        hint = (
            f"xcomstash has no codec for values of type {type_name}. Return a supported type "
            "(pandas/polars DataFrame, pyarrow Table/RecordBatch, numpy array or scalar, bytes, "
            "or anything Airflow's serde handles), or register a codec for it: "
            "xcomstash.codecs.register_codec(MyCodec()) -- see the user guide, 'Adding a codec'."
        )
        super().__init__(f"{hint} ({detail})" if detail else hint)


class SelectionError(XComStashError, ValueError):
    """A partial read asked for columns or rows the stored table does not have."""


class LegacyRowError(ConfigError):
    """A row written by Airflow's common.io backend that this configuration cannot read (its
    ``[common.io] xcom_objectstorage_path`` is no longer set): never handed over as a path."""


class EncodeError(XComStashError):
    """A codec failed to encode a value it claimed to handle."""


class InvalidReferenceError(XComStashError, ValueError):
    """An xcom row carries our marker but is not a well-formed reference of a known version."""


class StoreError(XComStashError):
    """The object store failed or could not be reached."""


class ObjectExistsError(StoreError):
    """``publish(key, if_absent=True)`` found an object already stored at ``key``."""


class StoreUnavailableError(StoreError):
    """The store could not be reached (connection refused, timeout, credentials)."""


class StoreFullError(StoreUnavailableError):
    """The store refused a write for lack of space (a full disk or quota, Redis at its
    ``maxmemory``). Nothing of the refused value stays behind; the message names the limit to
    raise."""


class StoreTimeoutError(StoreUnavailableError):
    """A push or pull did not finish within its deadline (``push_timeout`` / ``pull_timeout``)."""


class ReadError(XComStashError):
    """A stored value could not be read back. Carries where it was supposed to be."""

    def __init__(self, message: str, *, uri: str, coordinate: object | None = None) -> None:
        self.detail = message
        self.uri = uri
        self.coordinate = coordinate
        where = f" for XCom {coordinate}" if coordinate is not None else ""
        super().__init__(f"{message}{where} at {uri}")


class ObjectMissingError(ReadError, StoreError):
    """The reference points at an object that is no longer in the store."""


class IntegrityError(ReadError):
    """The stored object exists but is corrupt: digest mismatch, truncated, or an unreadable header."""


class StoreReadError(ReadError, StoreUnavailableError):
    """The store failed while reading an object that a reference points at."""


class DecodeError(ReadError):
    """The object passed its integrity check but its codec could not decode it
    (for example a codec missing on this worker, or an incompatible library version)."""


# ------------------------------------------------------------------ security (issue 4)


class SecurityError(XComStashError):
    """Base of the errors raised by encryption, signing, access and value policy checks."""


class KeyUnavailableError(SecurityError):
    """No key to encrypt or decrypt with: no keyset configured for the DAG, or the object's
    key id is not in the keyset this worker holds (another team's key, or a removed key)."""


class DecryptionError(IntegrityError, SecurityError):
    """Authenticated decryption failed: wrong key, tampered header, body or key slot, a
    truncated or reordered body, an object swapped with another, or one copied to another
    scope (DAG, or run where configured)."""

    def __init__(self, message: str, *, uri: str = "", coordinate: object | None = None) -> None:
        if uri:
            super().__init__(message, uri=uri, coordinate=coordinate)
        else:  # raised below the engine, which adds where the object lives
            self.detail, self.uri, self.coordinate = message, uri, coordinate
            Exception.__init__(self, message)


class ReferenceSignatureError(InvalidReferenceError, SecurityError):
    """A reference's MAC is missing, malformed or wrong: the row was forged or edited."""


class PlainRowError(SecurityError):
    """In exclusive mode workers only ever write references, so a plain value in an xcom row
    was written around xcomstash (the REST API, SQL, a worker without it) and is refused."""


class PurgeRefusedError(SecurityError):
    """A purge was refused and deleted nothing: it named no XCom (so what it may delete is
    unknown), or the reference in the row points outside that XCom's own objects (a row
    forged or copied from elsewhere)."""


class AccessDeniedError(SecurityError, PermissionError):
    """The producer restricted who may read this value, and the reader is not among them."""


class PolicyViolationError(SecurityError):
    """A value breaks a configured rule; the message names the rule and where it came from."""

    def __init__(self, message: str, *, rule: str = "") -> None:
        self.rule = rule
        super().__init__(message)


class TypeNotAllowedError(PolicyViolationError, TypeError):
    """The value's type is not on the allowlist that applies to its DAG."""


class ValueTooLargeError(PolicyViolationError):
    """The value is larger than the maximum size that applies to its DAG."""


class SensitiveDataError(PolicyViolationError):
    """The value holds what looks like a secret or personal data, and the policy is ``reject``."""


class ExtraLinkValueError(PolicyViolationError):
    """In exclusive mode, a value pushed under an operator extra-link key (``_link_*``) is kept
    as a plain row so that Airflow's API server can build the link from it; only a JSON string
    (a URL) or a small plain JSON value qualifies, so anything else under such a key (large,
    binary, a DataFrame) is refused rather than let through as a plain row."""


# ------------------------------------------------------------------ deployment checks


class ProbeError(StoreError):
    """``xcomstash check`` could not write, read back or delete its probe object in one store
    location; ``location`` is that location's root URI, ``step`` the operation that failed."""

    def __init__(self, message: str, *, location: str, step: str) -> None:
        self.location = location
        self.step = step
        self.reason = message
        super().__init__(f"{location}: {step} of the probe object failed: {message}")
