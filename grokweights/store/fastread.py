"""The verified fast read path: regions of uncompressed arrays of a local store, straight from their chunk files.

For every chunk a region touches, one job on a shared pool of threads opens the chunk file (regular files only,
without blocking), reads its bytes with ``preadv`` directly into their place in the destination (a chunk that
lands contiguously there; any other is read into a reused per-thread buffer and its part copied out), checks
the crc32c in hardware piece by piece while the bytes are in cache, and checks the checksum against the chunk
table of the array's record: the value recorded for this grid position when the array was written. So a
flipped byte, a truncated, empty, missing or non-regular chunk, and a chunk moved inside its array or brought
from another array or store are all refused, with the same one-line errors as the tensorstore path.

Arrays this path does not serve (compressed, or on another kvstore) are read through tensorstore
(:mod:`.reader` decides).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .chunkfile import ChunkFault, chunk_error, read_verified, scratch
from .chunks import ChunkPart, chunk_rank, grid_shape, parts_of

__all__ = ["LocalChunks", "Pending", "pool"]

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """The process's chunk-reading threads (one per CPU, at least 2; reads from a cold disk overlap too)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="chunk-read")
        return _POOL


class Pending:
    """The reads of one region: :meth:`result` waits for all of them and returns the destination."""

    def __init__(self, futures: list[Future], out: np.ndarray, fail: Any) -> None:
        self._futures, self._out, self._fail = futures, out, fail

    def result(self) -> np.ndarray:
        error = None
        for future in self._futures:
            try:
                future.result()
            except ChunkFault as exc:
                error = error or (exc, future)
        if error is not None:
            raise self._fail(*error) from None
        return self._out


class LocalChunks:
    """Reads of one uncompressed array of a local store (see the module docstring).

    Args:
        location: the store, as the user named it (for messages).
        store_path: the array's path inside the store.
        folder: the array's folder on disk.
        shape, chunk_shape: the array's.
        table: the crc32c of every chunk in C order of the grid, as recorded when it was written; None for an
            array written before chunk tables (each chunk's own checksum is still checked).
    """

    def __init__(self, location: str, store_path: str, folder: str, shape: tuple[int, ...],
                 chunk_shape: tuple[int, ...], table: list[int] | None) -> None:
        self.location, self.store_path, self.folder = location, store_path, folder
        self.shape, self.chunk_shape, self.table = shape, chunk_shape, table
        self._grid = grid_shape(shape, chunk_shape)

    def read_into(self, region: tuple[tuple[int, int], ...], out: np.ndarray) -> Pending:
        """Start reading ``region`` into ``out`` (C-contiguous, the region's shape); returns a :class:`Pending`."""
        if not out.flags.c_contiguous or out.shape != tuple(b - a for a, b in region):
            raise ValueError(f"destination of shape {out.shape} for region {region}")
        parts = parts_of(region, self.shape, self.chunk_shape)
        futures = [pool().submit(self._read, part, out) for part in parts]
        for future, part in zip(futures, parts, strict=True):
            future.part = part  # type: ignore[attr-defined]
        return Pending(futures, out, self._error)

    def _error(self, fault: ChunkFault, future: Any) -> Exception:
        return chunk_error(self.location, self.store_path, future.part.key, fault.cause, fault.detail)

    def _read(self, part: ChunkPart, out: np.ndarray) -> None:
        path = os.path.join(self.folder, *part.key.split("/"))
        expected = None if self.table is None else self.table[chunk_rank(part.position, self._grid)]
        if part.whole:  # fresh destination pages: populated piece by piece, just before each piece is read
            target = out[part.outer]
            read_verified(path, memoryview(target.reshape(-1).view(np.uint8)), expected, fresh=True)
            return
        nbytes = int(np.prod(self.chunk_shape)) * out.dtype.itemsize
        buf = scratch(nbytes)
        read_verified(path, memoryview(buf), expected)
        out[part.outer] = buf.view(out.dtype).reshape(self.chunk_shape)[part.inner]
