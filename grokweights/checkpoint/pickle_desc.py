"""What a shard's pickle stream describes, shared by the encoder and the parser: descriptors and names.

A shard holds one numpy array, or one ``QuantizedWeight8bit`` (an int8 ``weight`` and bfloat16 block
``scales``). :class:`ArrayDesc` and :class:`QuantizedDesc` describe them without their data; the
constants name the globals the release's pickles use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dtypes import bfloat16

__all__ = ["ArrayDesc", "QuantizedDesc", "ShardDesc", "PayloadRef", "ParsedArray", "ParsedShard", "DType",
           "as_dtype", "BFLOAT16", "NUMPY1_MODULE", "NUMPY2_MODULE", "QUANTIZED_CLASS", "DTYPE_CODES", "bfloat16"]

#: the module numpy 1.x (the release) names ``_reconstruct`` in; numpy 2 writes the second spelling.
NUMPY1_MODULE = "numpy.core.multiarray"
NUMPY2_MODULE = "numpy._core.multiarray"
#: the class the upstream loader injects into ``__main__``.
QUANTIZED_CLASS = ("__main__", "QuantizedWeight8bit")

#: dtypes a shard may hold besides bfloat16: pickle's dtype argument -> numpy dtype (never object or void).
DTYPE_CODES: dict[str, np.dtype] = {
    code: np.dtype(code) for code in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1")
}


@dataclass(frozen=True, eq=False)
class DType:
    """A shard dtype by name and item size, without numpy's extension types.

    Parsing a header and sizing a layout never import ``ml_dtypes`` (half a second at start-up): only
    :attr:`dtype` (the numpy dtype, which ``numpy.dtype(d)`` also gives) builds bfloat16. Compares equal to
    the numpy dtype and to the name it stands for.
    """

    name: str
    itemsize: int

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype (``ml_dtypes.bfloat16`` for bfloat16, imported here)."""
        return bfloat16() if self.name == "bfloat16" else np.dtype(self.name)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return self.name == other.name
        name = _name_of(other)
        return NotImplemented if name is None else self.name == name

    def __hash__(self) -> int:
        return hash(("DType", self.name))

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"dtype({self.name!r})"


def _name_of(value: Any) -> str | None:
    if isinstance(value, str):
        return "bfloat16" if value in ("bfloat16", "bf16") else _name_of(np.dtype(value)) if value else None
    if str(value) == "bfloat16" or getattr(value, "__name__", None) == "bfloat16":
        return "bfloat16"
    try:
        return np.dtype(value).name
    except TypeError:
        return None


BFLOAT16 = DType("bfloat16", 2)


def as_dtype(value: Any) -> DType:
    """A :class:`DType` from itself, a name (``int8``, ``bfloat16``), a numpy dtype or a scalar type."""
    if isinstance(value, DType):
        return value
    name = _name_of(value)
    if name is None:
        raise TypeError(f"not a dtype: {value!r}")
    return BFLOAT16 if name == "bfloat16" else DType(name, np.dtype(name).itemsize)


@dataclass(frozen=True)
class ArrayDesc:
    """Shape and dtype of one array in a shard (what the header says, without the data).

    ``dtype`` is a :class:`DType` (any dtype-like given is converted); ``dtype.dtype`` is numpy's.
    """

    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))

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


@dataclass(frozen=True)
class PayloadRef:
    """Where an array's raw bytes lie in the file."""

    offset: int
    nbytes: int


@dataclass(frozen=True)
class ParsedArray:
    """One array of a shard: its header, and where its C-order (or Fortran-order) bytes lie."""

    desc: ArrayDesc
    payload: PayloadRef
    fortran: bool = False


@dataclass(frozen=True)
class ParsedShard:
    """What a shard holds, read from its pickle stream without touching the payloads.

    ``arrays`` is ``(array,)`` for a plain array and ``(weight, scales)`` for a quantized weight.
    ``numpy_module`` tells which numpy spelling wrote it.
    """

    kind: str  # "array" | "quantized"
    arrays: tuple[ParsedArray, ...]
    numpy_module: str
    file_size: int

    @property
    def desc(self) -> ShardDesc:
        if self.kind == "quantized":
            return QuantizedDesc(self.arrays[0].desc, self.arrays[1].desc)
        return self.arrays[0].desc
