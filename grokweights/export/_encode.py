"""Float32 blocks -> the bytes of an output dtype (f32, f16, bf16 round-to-nearest-even, ggml q8_0)."""

from __future__ import annotations

import numpy as np

from ..checkpoint.dtypes import bfloat16

__all__ = ["encode"]


def encode(block: np.ndarray, dtype: str) -> np.ndarray:
    """``block`` (float32, whole rows) as a C-contiguous array whose bytes are the ``dtype`` encoding."""
    if dtype == "f32":
        return np.ascontiguousarray(block, dtype=np.float32)
    if dtype == "f16":
        return np.ascontiguousarray(block.astype(np.float16))
    if dtype == "bf16":
        return np.ascontiguousarray(block.astype(bfloat16()))
    if dtype == "q8_0":
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import quantize  # the reference q8_0 of llama.cpp's own Python package

        return np.ascontiguousarray(quantize(np.ascontiguousarray(block, dtype=np.float32),
                                             GGMLQuantizationType.Q8_0))
    raise ValueError(f"unknown dtype {dtype!r}")
