"""Reused read buffers for a store source: fresh memory costs more than the read (pages faulted and zeroed at
about 0.45 GB/s with numpy's huge-page hint, docs/benchmarks.md), so each expert or band is read into a
buffer of the pool, which comes back once every task made from it has run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from .._directio import aligned_buffer

__all__ = ["BufferPool", "released"]


class BufferPool:
    """Flat byte buffers, handed out as arrays of any shape and dtype that fit: an expert of ``moe/linear`` and
    one of ``moe/linear_1`` (transposed shapes, the same bytes) share buffers, and so do embedding bands.
    New buffers are anonymous mappings (no huge-page hint: faulted in several times faster than numpy's
    default); at most ``keep`` free buffers are kept, the largest."""

    def __init__(self, keep: int = 4) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._keep = keep

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """An array of ``shape`` and ``dtype`` (its contents undefined) and the flat buffer to give back."""
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        with self._lock:  # the smallest free buffer that fits without wasting more than its size
            fits = [i for i, b in enumerate(self._free) if nbytes <= b.nbytes <= 2 * nbytes]
            flat = self._free.pop(min(fits, key=lambda i: self._free[i].nbytes)) if fits else None
        if flat is None:
            flat = aligned_buffer(nbytes)
        return flat[:nbytes].view(dtype)[:int(np.prod(shape))].reshape(shape), flat

    def give(self, flat: np.ndarray) -> None:
        with self._lock:
            self._free.append(flat)
            self._free.sort(key=lambda b: b.nbytes)
            del self._free[:-self._keep]


def released(tasks: Iterable[Callable[[str], np.ndarray]], release: Callable[[], None]
             ) -> Iterator[Callable[[str], np.ndarray]]:
    """``tasks``, each wrapped so that ``release()`` runs once the last of them has run (on whichever thread)."""
    tasks = list(tasks)
    if not tasks:
        release()
        return
    left, lock = [len(tasks)], threading.Lock()

    def wrap(task: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
        def run(dtype: str) -> np.ndarray:
            try:
                return task(dtype)
            finally:
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    release()
        return run

    for task in tasks:
        yield wrap(task)
