"""Float32 pieces -> the bytes of an output dtype (f32, f16, bf16 round-to-nearest-even, ggml q8_0).

Blocks are computed and encoded on a few worker threads (numpy releases the GIL in its copy, multiply and
cast loops) and handed back in order, at most ``2 * WORKERS`` at a time. Each block is encoded into a
pooled output buffer that the writer hands back once written, so the same pages are reused block after
block instead of faulting in fresh memory (several times slower than a copy on these machines).
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .._directio import aligned_buffer
from ..checkpoint.dtypes import bfloat16
from ._kernels import bf16_bits
from ._tensor import GGML_BLOCKS, tensor_bytes

__all__ = ["encode", "encode_pieces", "run_ordered", "recycle", "Piece", "WORKERS"]

#: rows of a block as float32 (or any float dtype), and whether they are certainly free of NaN.
Piece = tuple[np.ndarray, bool]

#: worker threads for block conversion.
WORKERS = max(1, min(4, os.cpu_count() or 1))
_FREE: list[np.ndarray] = []
_FREE_LOCK = threading.Lock()
_BYTES_PER_ROW = {"f32": lambda c: 4 * c, "f16": lambda c: 2 * c, "bf16": lambda c: 2 * c, "i8pack": lambda c: c,
                  **{t: (lambda c, t=t: tensor_bytes((c,), t)) for t in GGML_BLOCKS}}


class _Buffer(np.ndarray):
    """An output buffer of the pool (a plain uint8 array, marked so that only these are recycled)."""


def _buffer(nbytes: int) -> np.ndarray:
    """A uint8 output buffer of ``nbytes``: a recycled one, else a fresh anonymous mapping."""
    with _FREE_LOCK:
        for i, buf in enumerate(_FREE):
            if buf.nbytes == nbytes:
                return _FREE.pop(i)
    return aligned_buffer(nbytes).view(_Buffer)


def recycle(buf: np.ndarray) -> None:
    """Hand back a buffer returned by :func:`encode_pieces` once its bytes are written."""
    if type(buf) is _Buffer:
        with _FREE_LOCK:
            _FREE.append(buf)
            del _FREE[:-3 * WORKERS]


def _put(piece: np.ndarray, nan_free: bool, dtype: str, dest: np.ndarray) -> None:
    """Encode one piece (rows, cols) into ``dest``, the bytes of exactly those rows."""
    rows, cols = piece.shape
    if dtype == "i8pack":  # int8 values + 128, four to a little-endian int32 word: the bytes with the top bit flipped
        np.bitwise_xor(piece.view(np.uint8), np.uint8(0x80), out=dest.reshape(rows, cols))
    elif dtype == "bf16" and nan_free:
        bf16_bits(piece, dest.view(np.uint16).reshape(rows, cols))
    elif dtype in ("f32", "f16", "bf16"):
        target = {"f32": np.float32, "f16": np.float16, "bf16": bfloat16()}[dtype]
        np.copyto(dest.view(target).reshape(rows, cols), piece, casting="unsafe")
    elif dtype == "q8_0":
        dest[:] = encode(piece, dtype).reshape(-1).view(np.uint8)
    else:  # a type of llama.cpp's quantizer: its own row quantizer
        from ._kquant import quantize_rows

        quantize_rows(piece, dtype, dest)


def encode_pieces(pieces: Iterable[Piece], shape: tuple[int, int], dtype: str) -> np.ndarray:
    """Encode the pieces of one block of ``shape`` (whole rows, in order) as ``dtype``: a pooled uint8 buffer."""
    if dtype not in _BYTES_PER_ROW:
        raise ValueError(f"unknown dtype {dtype!r}")
    row_bytes = _BYTES_PER_ROW[dtype](shape[1])
    out = _buffer(shape[0] * row_bytes)
    filled = 0
    for piece, nan_free in pieces:
        piece = piece.reshape(-1, shape[1])
        _put(piece, nan_free, dtype, out[filled:filled + piece.shape[0] * row_bytes])
        filled += piece.shape[0] * row_bytes
    if filled != out.nbytes:
        raise ValueError(f"a block of {shape} came to {filled} bytes, expected {out.nbytes}")
    return out


def run_ordered(tasks: Iterable[Any], fn: Callable[[Any], np.ndarray]) -> Iterator[np.ndarray]:
    """``fn(task)`` for each task on the worker threads, yielded in task order, a bounded number in flight.

    The threads belong to this call: they are shut down when it ends (or is abandoned), so no export leaves
    idle threads behind in the caller's process."""
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="grokweights-export")
    pending: collections.deque = collections.deque()
    try:
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= 2 * WORKERS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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
