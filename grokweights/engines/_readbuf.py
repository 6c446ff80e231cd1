"""Reused read buffers for a store source: fresh memory costs more than the read (pages faulted and zeroed at
about 0.45 GB/s with numpy's huge-page hint, docs/benchmarks.md), so each expert or band is read into a
buffer of the pool, which comes back once every task made from it has run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np

__all__ = ["BufferPool", "released"]


class BufferPool:
    """Buffers by shape and dtype; at most ``keep`` free ones of each are kept."""

    def __init__(self, keep: int = 2) -> None:
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        return np.empty(shape, dtype)

    def give(self, buf: np.ndarray) -> None:
        key = (tuple(buf.shape), buf.dtype.str)
        with self._lock:
            free = self._free.setdefault(key, [])
            if len(free) < self._keep:
                free.append(buf)


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
