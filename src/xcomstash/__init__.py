"""xcomstash: the XCom data plane for Apache Airflow 3.

The public surface is small: the :class:`Engine` and its :class:`StashConfig`, the
:class:`XComCoordinate` of a value, the :class:`Reference` kept in the xcom row, the codec
registry, and one exception hierarchy rooted at :class:`XComStashError`. In Airflow, set
``AIRFLOW__CORE__XCOM_BACKEND=xcomstash.airflow.backend.XComStashBackend``.
"""

from xcomstash.security.readers import Restricted
from xcomstash.codecs import Codec, register_codec
from xcomstash.config import StashConfig
from xcomstash.coordinate import XComCoordinate
from xcomstash.engine import Engine
from xcomstash.errors import (
    ConfigError,
    DecodeError,
    IntegrityError,
    InvalidReferenceError,
    ObjectMissingError,
    ReadError,
    StoreError,
    StoreReadError,
    StoreUnavailableError,
    UnsupportedTypeError,
    XComStashError,
)
from xcomstash.format.reference import Reference

__version__ = "0.1.0"

__all__ = [
    "Codec",
    "ConfigError",
    "DecodeError",
    "Engine",
    "IntegrityError",
    "InvalidReferenceError",
    "ObjectMissingError",
    "ReadError",
    "Reference",
    "Restricted",
    "StashConfig",
    "StoreError",
    "StoreReadError",
    "StoreUnavailableError",
    "UnsupportedTypeError",
    "XComCoordinate",
    "XComStashError",
    "register_codec",
]
