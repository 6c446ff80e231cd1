"""What a shard's pickle stream describes, shared by the encoder and the parser: descriptors and names.

A shard holds one numpy array, or one ``QuantizedWeight8bit`` (an int8 ``weight`` and bfloat16 block
``scales``). :class:`ArrayDesc` and :class:`QuantizedDesc` describe them without their data; the
constants name the globals the release's pickles use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .dtypes import bfloat16

__all__ = ["ArrayDesc", "QuantizedDesc", "ShardDesc", "NUMPY1_MODULE", "NUMPY2_MODULE", "QUANTIZED_CLASS",
           "DTYPE_CODES", "bfloat16"]

#: the module numpy 1.x (the release) names ``_reconstruct`` in; numpy 2 writes the second spelling.
NUMPY1_MODULE = "numpy.core.multiarray"
NUMPY2_MODULE = "numpy._core.multiarray"
#: the class the upstream loader injects into ``__main__``.
QUANTIZED_CLASS = ("__main__", "QuantizedWeight8bit")

#: dtypes a shard may hold besides bfloat16: pickle's dtype argument -> numpy dtype (never object or void).
DTYPE_CODES: dict[str, np.dtype] = {
    code: np.dtype(code) for code in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")
}


@dataclass(frozen=True)
class ArrayDesc:
    """Shape and dtype of one array in a shard (what the header says, without the data)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        """Payload bytes, in Python integers (no overflow whatever the shape)."""
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class QuantizedDesc:
    """A ``QuantizedWeight8bit``: int8 ``weight`` and bfloat16 block ``scales``."""

    weight: ArrayDesc
    scales: ArrayDesc


ShardDesc = ArrayDesc | QuantizedDesc
