"""Which codec handles which value, and which codec decodes which stored object.

Lookups walk the value's MRO and compare class names, so registering a codec for a type
never requires importing that type's library up front.
"""

from __future__ import annotations

from typing import Any

from xcomstash.codecs.base import Codec
from xcomstash.errors import ConfigError, XComStashError


class CodecRegistry:
    def __init__(self) -> None:
        self._by_name: dict[str, Codec] = {}
        self._by_type: dict[str, Codec] = {}

    def register(self, codec: Codec, *, replace: bool = False) -> None:
        """Add a codec; types already claimed by another codec need ``replace=True``."""
        if not getattr(codec, "name", None) or not getattr(codec, "type_names", None):
            raise ConfigError(f"codec {codec!r} must define 'name' and 'type_names'")
        if not replace:
            if codec.name in self._by_name:
                raise ConfigError(f"a codec named {codec.name!r} is already registered")
            taken = [t for t in codec.type_names if t in self._by_type]
            if taken:
                raise ConfigError(f"types {taken} already have a codec; pass replace=True")
        self._by_name[codec.name] = codec
        for type_name in codec.type_names:
            self._by_type[type_name] = codec

    def for_value(self, value: Any) -> Codec | None:
        """The codec for this value's type (or nearest registered base class), if any."""
        for cls in type(value).__mro__:
            codec = self._by_type.get(f"{cls.__module__}.{cls.__qualname__}")
            if codec is not None:
                return codec
        return None

    def by_name(self, name: str) -> Codec:
        try:
            return self._by_name[name]
        except KeyError:
            raise XComStashError(
                f"stored object uses codec {name!r}, which is not registered in this worker "
                f"(known: {sorted(self._by_name)}); install/register it where values are read"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)
