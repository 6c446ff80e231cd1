"""Numpy kernels of the export: an int8 transpose in 8x8 byte blocks, bf16 rounding in integer bits, scratch.

numpy's strided copy moves about 0.25 G elements/s per core whatever the element size, so an int8 matrix
transposed element by element is bound by it. Here it moves 64-bit words instead (eight bytes at once):
a tile of source rows is copied in runs of whole rows into a cache-sized scratch of words grouped by
row within their 8-row band, each 8x8 byte block is transposed in place by three rounds of masked
shift-and-xor over whole arrays of words (contiguous numpy loops), and the words are copied out to the
output rows (strided reads from the cache, contiguous writes). Rounding float32 to bfloat16 (nearest, ties to
even) is done on the integer bits, several times faster than a cast through ``ml_dtypes``; it is exact for
every value that is not NaN.

Scratch buffers are per thread and reused, so the blocks of a tensor never fault in fresh pages.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["transpose", "bf16_bits", "scratch"]

#: source rows gathered per round of the blocked transpose (a multiple of 8).
ROW_TILE = 2048
_ROUNDS = tuple((d, np.uint64(mask), np.uint64(shift)) for d, mask, shift in (
    (4, 0x00000000FFFFFFFF, 32), (2, 0x0000FFFF0000FFFF, 16), (1, 0x00FF00FF00FF00FF, 8)))
_LOCAL = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """A per-thread reusable buffer of ``shape`` (its contents are whatever was left in it)."""
    pool = _LOCAL.__dict__.setdefault("buffers", {})
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buf = pool.get(name)
    if buf is None or buf.nbytes < size:
        buf = pool[name] = np.empty(max(size, 1), np.uint8)
    return buf[:size].view(dtype).reshape(shape)


def _swap_bytes(x: np.ndarray, t: np.ndarray) -> None:
    """Transpose in place the 8x8 byte blocks whose k-th rows are the words ``x[k]`` (little-endian).

    Round ``d`` swaps the off-diagonal ``d x d`` sub-blocks between rows ``k`` and ``k + d`` of every
    2d-row group, all groups in one numpy call per operation; ``t`` is scratch of ``4 * x.shape[1]`` words.
    """
    n = x.shape[1]
    for d, mask, shift in _ROUNDS:
        pairs = x.reshape(8 // (2 * d), 2, d, n)
        a, b = pairs[:, 0], pairs[:, 1]
        tmp = t[:4 * n].reshape(a.shape)
        np.right_shift(a, shift, out=tmp)
        np.bitwise_xor(tmp, b, out=tmp)
        np.bitwise_and(tmp, mask, out=tmp)
        np.bitwise_xor(b, tmp, out=b)
        np.left_shift(tmp, shift, out=tmp)
        np.bitwise_xor(a, tmp, out=a)


def transpose(src: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = src.T`` for a 2-D ``src``; fast for one-byte elements in rows of a multiple of 8."""
    rows, cols = src.shape
    if (src.dtype.itemsize != 1 or rows % 8 or cols % 8 or src.strides[1] != 1 or out.strides != (rows, 1)
            or not np.little_endian):
        for r0 in range(0, rows, 256):
            np.copyto(out[:, r0:r0 + 256], src[r0:r0 + 256].T)
        return out
    nj = cols // 8
    words = src.view(np.uint64)
    dest = out.view(np.uint64).reshape(nj, 8, rows // 8)  # dest[j, c, i]: out row 8j+c, words of rows 8i..8i+7
    for r0 in range(0, rows, ROW_TILE):
        ni = min(ROW_TILE, rows - r0) // 8
        x = scratch("tr_x", (8, ni, nj), np.uint64)  # x[k, i, j]: word j of source row r0 + 8i + k
        np.copyto(x, words[r0:r0 + 8 * ni].reshape(ni, 8, nj).transpose(1, 0, 2))  # runs of whole rows
        _swap_bytes(x.reshape(8, ni * nj), scratch("tr_t", (4 * ni * nj,), np.uint64))
        np.copyto(dest[:, :, r0 // 8:r0 // 8 + ni], x.transpose(2, 0, 1))  # strided reads, from the cache
    return out


def bf16_bits(values: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write the bfloat16 bits (uint16, nearest-even) of float32 ``values`` (no NaN) into ``out``."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    tmp = scratch("bf16_tmp", bits.shape, np.uint32)
    np.right_shift(bits, 16, out=tmp)
    np.bitwise_and(tmp, 1, out=tmp)
    np.add(tmp, 0x7FFF, out=tmp)
    np.add(tmp, bits, out=tmp)
    np.right_shift(tmp, 16, out=out, casting="unsafe")
    return out
