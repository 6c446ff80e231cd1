"""Host memory for a load: the final buffers on CPU devices, a pool of reused staging buffers for accelerators.

On CPU devices jax adopts a page-aligned numpy buffer as the device buffer without copying it, so each region
is read straight into its final place (a private anonymous mapping: its fresh pages are faulted in once, by
the read that fills them) and never reused.

For accelerators the bytes must cross to the device anyway: regions are read into **staging** buffers that are
handed back to a pool once the leaf that used them is on its devices (``block_until_ready``), and reused for the
next leaves of the same size (Grok-1's 64 layers repeat the same shapes). Host memory during a load is then
bounded by the read-ahead window and the pool, not by the model, and pages already faulted in are reused instead
of the kernel zeroing fresh ones for every leaf. jax gives Python no writable page-locked host buffer, so the
staging buffers are ordinary (pageable) memory; the runtime copies them to the device through its own pinned
bounce buffers.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from typing import Any

import numpy as np

from .._directio import aligned_buffer

__all__ = ["HostBuffers", "host_buffer", "STAGING_ENV", "staging_for"]

#: ``pool`` forces staging buffers (also on CPU devices, where the device then gets a copy), ``final`` forbids them
STAGING_ENV = "GROKWEIGHTS_LOAD_STAGING"
#: free staging buffers kept for reuse, at most
POOL_BYTES = 2 << 30


def host_buffer(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A page-aligned host buffer from a private anonymous mapping.

    jax on CPU adopts a suitably aligned numpy array without copying it, and pages of a plain anonymous mapping
    fill several times faster here than numpy's fresh allocations with their huge-page hint. The mapping is
    private: ``mmap.mmap(-1, n)`` alone is a shared one, backed by shmem, whose pages filled ~1.6x slower.
    """
    return aligned_buffer(math.prod(shape) * dtype.itemsize).view(dtype).reshape(shape)


def staging_for(platform: str) -> bool:
    """Whether a load onto devices of ``platform`` reads through staging buffers (see the module docstring)."""
    forced = os.environ.get(STAGING_ENV, "").strip().lower()
    if forced in ("pool", "final"):
        return forced == "pool"
    return platform != "cpu"


class HostBuffers:
    """Buffers for the regions of a load (see the module docstring).

    ``staging``: reuse buffers handed back with :meth:`give` (else every buffer is final and never reused).
    ``copy_out``: the devices adopt host memory (CPU), so a staging buffer must be copied before it is handed to
    jax (only when staging is forced on CPU devices).
    """

    def __init__(self, *, staging: bool, copy_out: bool = False) -> None:
        self.staging, self.copy_out = staging, copy_out
        self._free: dict[int, list[mmap.mmap]] = {}
        self._free_bytes = 0
        self._taken: list[mmap.mmap] = []
        self._lock = threading.Lock()
        #: buffers allocated and buffers reused (staging)
        self.allocated = 0
        self.reused = 0

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A buffer for one region (remembered for :meth:`drain` when staging)."""
        if not self.staging:
            return host_buffer(shape, dtype)
        nbytes = max(1, math.prod(shape) * dtype.itemsize)
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                mm = free.pop()
                self._free_bytes -= nbytes
                self.reused += 1
            else:
                mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
                self.allocated += 1
            self._taken.append(mm)
        return np.frombuffer(mm, dtype, count=math.prod(shape)).reshape(shape)

    def drain(self) -> list[mmap.mmap]:
        """The staging buffers taken since the last call (those of the leaf just started)."""
        with self._lock:
            taken, self._taken = self._taken, []
        return taken

    def give(self, buffers: list[mmap.mmap]) -> None:
        """Hand back the buffers of a leaf that is on its devices; kept for reuse up to ``POOL_BYTES``."""
        with self._lock:
            for mm in buffers:
                if self._free_bytes + len(mm) <= POOL_BYTES:
                    self._free.setdefault(len(mm), []).append(mm)
                    self._free_bytes += len(mm)

    def handed(self, array: np.ndarray) -> Any:
        """What jax is given for a region: the buffer itself, or a copy where the device would adopt it."""
        return np.array(array, copy=True) if self.staging and self.copy_out else array
