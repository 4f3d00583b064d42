"""NumPy arrays and scalars in NumPy's own ``.npy`` format (never pickle).

``.npy`` records dtype, shape and memory order, so Fortran-ordered and 0-d arrays come back
as they went in. Object arrays would need pickle and are refused with a clear error.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from xcomstash.codecs.base import Codec
from xcomstash.errors import UnsupportedTypeError


class NumpyArrayCodec(Codec):
    name = "numpy.npy"
    type_names = ("numpy.ndarray",)

    def estimate_size(self, value: Any) -> int:
        return int(value.nbytes)

    def encode(self, value: Any, sink: BinaryIO) -> None:
        import numpy as np

        if value.dtype.hasobject:
            raise UnsupportedTypeError(
                f"numpy.ndarray[{value.dtype}]",
                "object arrays would need pickle; convert to a typed array or a DataFrame",
            )
        np.lib.format.write_array(sink, np.asanyarray(value), allow_pickle=False)

    def decode(self, source: BinaryIO, meta: dict[str, Any]) -> Any:
        import numpy as np

        return np.lib.format.read_array(source, allow_pickle=False)

    def summary(self, value: Any) -> str:
        shape = " x ".join(f"{n:,}" for n in value.shape) or "scalar"
        return f"ndarray {value.dtype} {shape}"


class NumpyScalarCodec(NumpyArrayCodec):
    """``np.float64(1.5)`` comes back as ``np.float64``: stored as a 0-d array, unwrapped on read."""

    name = "numpy.scalar"
    type_names = ("numpy.generic",)
    inline_when_small = True

    def estimate_size(self, value: Any) -> int:
        return int(value.nbytes)

    def encode(self, value: Any, sink: BinaryIO) -> None:
        import numpy as np

        super().encode(np.asarray(value), sink)

    def decode(self, source: BinaryIO, meta: dict[str, Any]) -> Any:
        return super().decode(source, meta)[()]

    def summary(self, value: Any) -> str:
        return f"numpy.{type(value).__name__}"
