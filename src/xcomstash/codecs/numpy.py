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
        if isinstance(value, np.ma.MaskedArray):
            # .npy holds the data only: the mask would be silently dropped.
            raise UnsupportedTypeError(
                "numpy.ma.MaskedArray",
                "the mask would be lost; push value.filled(...) or data and mask as two arrays",
            )
        np.lib.format.write_array(sink, np.asanyarray(value), allow_pickle=False)

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        """Parse the ``.npy`` header, then view the payload in place: no copy of the array."""
        import io

        import numpy as np

        head = io.BytesIO(data[: min(len(data), 65536)].tobytes())
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        if dtype.hasobject:
            raise ValueError("object arrays are never decoded (they would need pickle)")
        count = 1
        for n in shape:
            count *= n
        array = np.frombuffer(data, dtype=dtype, count=count, offset=head.tell())
        return array.reshape(shape, order="F" if fortran else "C")

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

    def decode(self, data: memoryview, meta: dict[str, Any]) -> Any:
        return super().decode(data, meta)[()]

    def summary(self, value: Any) -> str:
        return f"numpy.{type(value).__name__}"
