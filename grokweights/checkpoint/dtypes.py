"""The one dtype table: the names a checkpoint, a plan or a store uses, and what each means.

Names are plain strings (``float32``, ``int8``, ``bfloat16``) wherever data is planned or described, so
planning never imports numpy's extension types; :func:`numpy_dtype` turns a name into a numpy dtype and
imports ``ml_dtypes`` only when ``bfloat16`` is asked for (importing it costs about half a second).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["ITEMSIZE", "NAMES", "numpy_dtype", "itemsize", "bfloat16", "name_of"]

#: bytes per element of every dtype name a checkpoint, a plan or a store may use.
ITEMSIZE: dict[str, int] = {"float32": 4, "int8": 1, "bfloat16": 2}
#: the dtype names, in a stable order.
NAMES: tuple[str, ...] = tuple(ITEMSIZE)

_BFLOAT16: np.dtype | None = None


def bfloat16() -> np.dtype:
    """numpy's bfloat16 dtype (``ml_dtypes``), imported on first use."""
    global _BFLOAT16
    if _BFLOAT16 is None:
        import ml_dtypes

        _BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
    return _BFLOAT16


def _check(name: str) -> str:
    if name not in ITEMSIZE:
        raise ConfigError(f"unknown dtype {name!r}; expected one of {', '.join(NAMES)}", expected=list(NAMES),
                          actual=name)
    return name


def itemsize(name: str) -> int:
    """Bytes per element of the dtype ``name``."""
    return ITEMSIZE[_check(name)]


def numpy_dtype(name: Any) -> np.dtype:
    """The numpy dtype of a name (``bfloat16``/``bf16`` included) or of anything ``numpy.dtype`` accepts."""
    text = str(name)
    if text in ("bfloat16", "bf16"):
        return bfloat16()
    if isinstance(name, str) and name in ITEMSIZE:
        return np.dtype(name)
    return np.dtype(name)


def name_of(dtype: Any) -> str:
    """The table's name of a numpy dtype (``bfloat16`` for ml_dtypes' type)."""
    return _check(np.dtype(dtype).name if str(dtype) != "bfloat16" else "bfloat16")
