"""Reading the source, one tensor at a time: dequantised, transposed row blocks of an output tensor.

A checkpoint source opens each shard as a memory map (never unpickled), checks its shape against the
layout, and yields the output tensor as float32 blocks of whole output rows, so a block is at most about
``BLOCK_BYTES`` whatever the tensor's size. The pages of each expert (or plain array) are released from
the process once it has been read, so the resident set stays near one expert matrix plus the blocks.
"""

from __future__ import annotations

import functools
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
from ._plan import OutTensor

__all__ = ["CheckpointSource", "BLOCK_BYTES"]

#: float32 bytes of one block handed to a writer.
BLOCK_BYTES = 8 * 2**20
#: source rows per tile of the blocked transpose (a tile of the int8 source stays in the CPU cache).
TILE = 256


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

    def blocks(self, tensor: OutTensor) -> Iterator[Callable[[], np.ndarray]]:
        """The output tensor as tasks, each computing one float32 block of whole rows, in row-major order.

        Tasks are independent (each reads its own part of the memory map into its own buffers), so a
        writer may run several at once and write their results in order.
        """
        value = self.open(tensor.source)
        stacked = len(_shape_of(value)[0]) == 3
        if stacked and tensor.expert is None:  # all experts, stacked [E, out, in]
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


def _rows(weight: np.ndarray, scales: np.ndarray | None, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` as float32 (a copy); their pages are released from the process."""
    if scales is None:
        block = np.array(weight[start:stop], dtype=np.float32)
    else:
        block = dequantize_region(weight, scales, (slice(start, stop), slice(None)), np.float32)
    drop_pages(weight[start:stop])
    return block


def _columns_transposed(weight: np.ndarray, scales: np.ndarray | None, start: int, stop: int) -> np.ndarray:
    """``dequantise(weight)[:, start:stop].T`` as float32, transposed tile by tile (cache-sized tiles)."""
    rows, n = weight.shape[0], stop - start
    raw = np.empty((n, rows), weight.dtype)
    for r0 in range(0, rows, TILE):
        np.copyto(raw[:, r0:r0 + TILE], weight[r0:r0 + TILE, start:stop].T)
    out = np.empty((n, rows), np.float32)
    if scales is None:
        np.copyto(out, raw)
    else:  # source row r (output column r) uses scale row r // (rows / blocks)
        blocks = scales.shape[0]
        s = scales[:, start:stop].astype(np.float32).T[:, :, None]
        np.multiply(raw.reshape(n, blocks, -1), s, out=out.reshape(n, blocks, -1))
    return out


def _matrix_tasks(value: Any, expert: int | None, transpose: bool) -> Iterator[Callable[[], np.ndarray]]:
    """Tasks for the row blocks of one matrix (transposed if asked); its pages are released afterwards."""
    weight, scales = _part(value, expert)
    try:
        if weight.ndim == 1:
            yield lambda: np.array(weight, dtype=np.float32)
            return
        rows, cols = weight.shape
        out_rows, out_cols = (cols, rows) if transpose else (rows, cols)
        step = max(1, BLOCK_BYTES // (4 * out_cols))
        read = _columns_transposed if transpose else _rows
        for start in range(0, out_rows, step):
            yield functools.partial(read, weight, scales, start, min(out_rows, start + step))
    finally:
        drop_pages(weight)
        if scales is not None:
            drop_pages(scales)
