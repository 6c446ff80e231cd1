"""Int8 weights with block scales, in numpy: the one dequantisation and the one scale re-blocking.

A quantized weight ``w`` of shape ``[..., rows, cols]`` has bfloat16 ``scales`` of shape
``[..., nb, cols]``: row ``i`` of the input axis (-2) uses scale row ``i // (rows / nb)``. The release
has ``nb = 8`` where its partition rules split the input axis 8 ways, else 1.

Every numpy dequantisation in the code base goes through :func:`dequantize_rows` (float32 arithmetic,
temporaries bounded by ``DEQUANT_PIECE`` elements whatever the tensor's size); the JAX twin for device
arrays is :func:`grokweights.model.params.dequantize`. Re-blocking (repeating each scale row so that a
store's blocks line up with a mesh's shards) is :func:`expand_scales`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..errors import ShardFormatError

__all__ = ["dequantize", "dequantize_region", "dequantize_rows", "expand_scales", "DEQUANT_PIECE"]

#: elements dequantised at once (bounds the float32 temporaries)
DEQUANT_PIECE = 1 << 22


def _block(rows: int, blocks: int) -> int:
    if blocks < 1 or rows % blocks:
        raise ShardFormatError(f"{blocks} scale blocks do not divide {rows} rows", expected=f"a divisor of {rows}",
                               actual=blocks)
    return rows // blocks


def dequantize(weight: Any, scales: Any, *, dtype: Any = np.float32) -> np.ndarray:
    """``weight[..., i, o] * scales[..., i // (in / blocks), o]`` in numpy, as ``dtype``."""
    weight, scales = np.asarray(weight), np.asarray(scales)
    _block(weight.shape[-2], scales.shape[-2])
    return dequantize_region(weight, scales, (), dtype)


def dequantize_region(weight: np.ndarray, scales: np.ndarray, region: tuple[slice, ...], dtype: Any,
                      out: np.ndarray | None = None) -> np.ndarray:
    """``weight[region]`` dequantised with the whole tensor's block ``scales`` into ``dtype``."""
    region = tuple(region) + (slice(None),) * (weight.ndim - len(region))
    bounds = [s.indices(n)[:2] for s, n in zip(region, weight.shape, strict=True)]
    block = _block(weight.shape[-2], scales.shape[-2])
    (r0, r1), (c0, c1) = bounds[-2], bounds[-1]
    lead = tuple(slice(a, b) for a, b in bounds[:-2])
    return dequantize_rows(weight[(*lead, slice(r0, r1), slice(c0, c1))], scales[(*lead, slice(None), slice(c0, c1))],
                           block=block, first_row=r0, first_block=0, dtype=dtype, out=out)


def dequantize_rows(weight: np.ndarray, scales: np.ndarray, *, block: int, first_row: int = 0,
                    first_block: int | None = None, dtype: Any = np.float32,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Dequantise rows of a weight given the scale rows that cover them.

    ``weight[..., r, :]`` is row ``first_row + r`` of the whole tensor, whose scale row is
    ``(first_row + r) // block``; ``scales[..., b, :]`` is scale row ``first_block + b`` (default: the
    block of ``first_row``). Leading and column axes of the two must already match. Writes into ``out``
    (at least the weight's shape; its leading corner is used) when given.
    """
    first_block = first_row // block if first_block is None else first_block
    shape = weight.shape
    out = np.empty(shape, dtype) if out is None else out[tuple(slice(0, n) for n in shape)]
    rows, cols = shape[-2], shape[-1]
    step = max(1, DEQUANT_PIECE // max(1, cols))
    for lead in itertools.product(*(range(n) for n in shape[:-2])):
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            w = weight[lead + (slice(start, stop),)].astype(np.float32)
            index = np.arange(first_row + start, first_row + stop) // block - first_block
            out[lead + (slice(start, stop),)] = w * scales[lead][index].astype(np.float32)
    return out


def expand_scales(scales: np.ndarray, blocks: int) -> np.ndarray:
    """Re-block ``scales`` (``nb`` row blocks on axis -2) to ``blocks`` rows, a multiple of ``nb``."""
    nb = scales.shape[-2]
    if blocks % nb:
        raise ShardFormatError(f"cannot re-block {nb} scale blocks to {blocks}", expected=f"a multiple of {nb}",
                               actual=blocks)
    return np.repeat(scales, blocks // nb, axis=-2) if blocks != nb else np.asarray(scales)
