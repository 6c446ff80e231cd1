"""Float32 blocks -> the bytes of an output dtype (f32, f16, bf16 round-to-nearest-even, ggml q8_0).

Blocks are computed and encoded on a few worker threads (numpy releases the GIL in its copy, multiply and
cast loops) and handed back in order, at most ``2 * WORKERS`` at a time.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..checkpoint.dtypes import bfloat16

__all__ = ["encode", "run_ordered", "WORKERS"]

#: worker threads for block conversion.
WORKERS = max(1, min(4, os.cpu_count() or 1))
_POOL: ThreadPoolExecutor | None = None


def run_ordered(tasks: Iterable[Any], fn: Callable[[Any], np.ndarray]) -> Iterator[np.ndarray]:
    """``fn(task)`` for each task on the worker threads, yielded in task order, a bounded number in flight."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="grokweights-export")
    pending: collections.deque = collections.deque()
    try:
        for task in tasks:
            pending.append(_POOL.submit(fn, task))
            if len(pending) >= 2 * WORKERS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


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
