"""The codec interface: how one family of Python values becomes bytes and back.

A codec names the types it handles by their fully qualified class names, so looking a codec
up never imports pandas, polars or pyarrow: those load only when a value of theirs is seen.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, BinaryIO, ClassVar


class Codec(ABC):
    #: Stored in every object header; never change it for a released codec.
    name: ClassVar[str]
    #: Fully qualified names (``module.QualName``) of the classes this codec handles,
    #: matched against the value's MRO so subclasses are handled too.
    type_names: ClassVar[tuple[str, ...]]
    #: Small values of these types may stay inline through Airflow's serde (BaseXCom's format).
    inline_when_small: ClassVar[bool] = False

    @abstractmethod
    def estimate_size(self, value: Any) -> int:
        """A cheap estimate of the encoded size, used for routing (no encoding)."""

    def size_at_least(self, value: Any) -> int:
        """A bound the size is certainly not below, cheaper than :meth:`estimate_size`: a
        value past the threshold by this bound is stored without estimating (0: no bound)."""
        return 0

    def meta(self, value: Any) -> dict[str, Any]:
        """JSON metadata the decoder needs, written into the object header."""
        return {}

    @abstractmethod
    def encode(self, value: Any, sink: BinaryIO) -> None:
        """Write the value to ``sink``, ideally in chunks, without building one big buffer."""

    @abstractmethod
    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        """Rebuild the value from the whole verified payload. ``data`` is writable and owned
        by the caller only until this returns, so codecs may build the value on top of it
        (zero-copy) instead of copying."""

    @abstractmethod
    def summary(self, value: Any) -> str:
        """One line for the Airflow UI, for example ``DataFrame 1,000 rows x 9 cols``."""


def qualified_type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def short_type_name(value: Any) -> str:
    """``pandas.DataFrame`` rather than ``pandas.core.frame.DataFrame``: what users type."""
    cls = type(value)
    top = cls.__module__.split(".", 1)[0]
    return cls.__qualname__ if top == "builtins" else f"{top}.{cls.__qualname__}"
