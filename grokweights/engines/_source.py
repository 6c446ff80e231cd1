"""Reading the source, one tensor at a time: dequantised, transposed row blocks of an output tensor.

A checkpoint source opens each shard as a memory map (never unpickled), checks its shape against the
layout, and yields the output tensor as tasks for blocks of whole output rows (about ``BLOCK_ELEMS``
elements whatever the tensor's size). A block of a transposed matrix is transposed as raw int8 (see
``_kernels``), then dequantised and encoded one cache-sized piece at a time, so no float32 copy of a
block is ever made. The pages of each expert (or plain array) are released from the process once it has
been read, so the resident set stays near one expert matrix plus the blocks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint.config import ModelConfig
from ..checkpoint.layout import TensorSpec, layout
from ..checkpoint.paths import resolve_checkpoint_dir
from ..checkpoint.quant import dequantize_region
from ..checkpoint.shards import QuantizedWeight8bit, drop_pages, read_shard
from ..errors import LayoutMismatchError
from ._encode import Piece, encode_pieces
from ._int8 import int8_tasks
from ._kernels import scratch, transpose
from ._tensor import OutTensor

__all__ = ["CheckpointSource", "matrix_tasks", "BLOCK_ELEMS"]

#: output elements of one block (one task of a worker thread).
BLOCK_ELEMS = 2 * 2**20
#: float32 elements of one piece of a block (dequantised and encoded while it is in the CPU cache).
PIECE = 64 * 2**10


def _shape_of(value: Any) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    if isinstance(value, QuantizedWeight8bit):
        return tuple(value.weight.shape), tuple(value.scales.shape)
    return tuple(value.shape), None


class CheckpointSource:
    """The tensors of a ``ckpt-0`` checkpoint, read through memory maps.

    Args:
        path: the folder holding ``ckpt-0/`` (or ``ckpt-0/`` itself).
        config: the model the checkpoint holds.
    """

    def __init__(self, path: str | os.PathLike[str], config: ModelConfig) -> None:
        self.ckpt = resolve_checkpoint_dir(path)
        self.config = config
        self.specs: dict[str, TensorSpec] = {spec.key: spec for spec in layout(config)}

    def open(self, key: str) -> np.ndarray | QuantizedWeight8bit:
        """The tensor ``key`` as memory-mapped arrays, its shape checked against the layout."""
        spec = self.specs[key]
        path = Path(self.ckpt) / spec.file
        value = read_shard(path)
        shape, scales = _shape_of(value)
        want_scales = spec.scales_shape
        bad_scales = scales is not None and (
            want_scales is None or scales[:-2] != want_scales[:-2] or scales[-1] != want_scales[-1]
            or shape[-2] % scales[-2])
        if shape != spec.shape or (scales is None) != (want_scales is None) or bad_scales:
            raise LayoutMismatchError(
                f"{path}: expected {spec.key} of shape {list(spec.shape)} (scales {want_scales}), "
                f"found shape {list(shape)} (scales {scales})", path=path,
                expected=list(spec.shape), actual=list(shape))
        return value

    def blocks(self, tensor: OutTensor) -> Iterator[Callable[[str], np.ndarray]]:
        """The output tensor as tasks, each computing one block of whole rows, in row-major order.

        A task called with an output dtype returns the block's encoded bytes in a pooled buffer (hand it back
        with :func:`._encode.recycle` once written). Tasks are independent (each reads its own part of the
        memory map into its own per-thread scratch), so a writer may run several at once and write their
        results in order.
        """
        value = self.open(tensor.source)
        stacked = len(_shape_of(value)[0]) == 3
        if tensor.part is not None:  # a compressed-tensors part of one int8 matrix
            weight, scales = _part(value, tensor.expert if stacked else None)
            yield from int8_tasks(lambda: weight, lambda: scales, weight.shape, tensor, matrix_tasks)
        elif stacked and tensor.expert is None:  # all experts, stacked [E, out, in]
            for e in range(_shape_of(value)[0][0]):
                yield from _matrix_tasks(value, e, tensor.transpose)
        else:
            yield from _matrix_tasks(value, tensor.expert if stacked else None, tensor.transpose)


def _part(value: Any, expert: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The weight (and scales) of one expert, or of the whole 1-D/2-D tensor."""
    if isinstance(value, QuantizedWeight8bit):
        if expert is None:
            return value.weight, value.scales
        return value.weight[expert], value.scales[expert]
    return (value if expert is None else value[expert]), None


def _rows(weight: np.ndarray, scales: np.ndarray | None, start: int, stop: int, finite: bool) -> Iterator[Piece]:
    """Rows ``start:stop``, dequantised, a cache-sized piece at a time; their pages are released afterwards."""
    cols = weight.shape[1]
    step = max(1, PIECE // cols)
    for r0 in range(start, stop, step):
        r1 = min(stop, r0 + step)
        if scales is None:
            yield weight[r0:r1], False  # cast by the encoder, straight from the map
        else:
            out = scratch("piece", (r1 - r0, cols), np.float32)
            yield dequantize_region(weight, scales, (slice(r0, r1), slice(None)), np.float32, out=out), finite
    drop_pages(weight[start:stop])


def _columns_transposed(weight: np.ndarray, scales: np.ndarray | None, start: int, stop: int,
                        finite: bool) -> Iterator[Piece]:
    """``dequantise(weight)[:, start:stop].T``: transposed raw, then dequantised a cache-sized piece at a time."""
    rows, n = weight.shape[0], stop - start
    raw = transpose(weight[:, start:stop], scratch("raw", (n, rows), weight.dtype))
    step = max(1, PIECE // rows)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        if scales is None:
            yield raw[r0:r1], False
            continue
        # source row r (output column r) uses scale row r // (rows / blocks)
        blocks, k = scales.shape[0], r1 - r0
        out = scratch("piece", (k, rows), np.float32)
        s = scales[:, start + r0:start + r1].astype(np.float32).T[:, :, None]
        np.multiply(raw[r0:r1].reshape(k, blocks, -1), s, out=out.reshape(k, blocks, -1))
        yield out, finite


def _task(shape: tuple[int, int], pieces: Callable[..., Iterator[Piece]], *args: Any) -> Callable[[str], np.ndarray]:
    """A task: the block of ``shape`` that ``pieces(*args)`` computes, encoded as the dtype it is given."""
    return lambda dtype: encode_pieces(pieces(*args), shape, dtype)


def _matrix_tasks(value: Any, expert: int | None, transpose_: bool) -> Iterator[Callable[[str], np.ndarray]]:
    """Tasks for the row blocks of one matrix (transposed if asked); its pages are released afterwards."""
    return matrix_tasks(*_part(value, expert), transpose_)


def matrix_tasks(weight: np.ndarray, scales: np.ndarray | None,
                 transpose_: bool) -> Iterator[Callable[[str], np.ndarray]]:
    """Tasks for the row blocks of one 1-D/2-D ``weight`` (int8 with block ``scales``, or float; transposed if
    asked), each returning a block's encoded bytes; a memory map's pages are released afterwards."""
    finite = scales is not None and bool(np.isfinite(scales).all())  # int8 x finite scales: never NaN
    try:
        if weight.ndim == 1:
            yield _task((1, weight.shape[0]), _rows, weight.reshape(1, -1), None, 0, 1, False)
            return
        rows, cols = weight.shape
        out_rows, out_cols = (cols, rows) if transpose_ else (rows, cols)
        step = max(1, BLOCK_ELEMS // out_cols)
        step = step - step % 8 if step > 8 else step  # whole 8x8 blocks for the transpose
        read = _columns_transposed if transpose_ else _rows
        for start in range(0, out_rows, step):
            stop = min(out_rows, start + step)
            yield _task((stop - start, out_cols), read, weight, scales, start, stop, finite)
    finally:
        drop_pages(weight)
        if scales is not None:
            drop_pages(scales)
