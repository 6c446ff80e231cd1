"""The chunk grid of a store array as plain data: keys, positions, and the chunks a region touches.

Pure functions (no I/O, no tensorstore). zarr v3's regular grid with the default chunk key encoding names the
chunk at grid position ``(i, j, k)`` ``c/i/j/k``; every chunk holds a whole ``chunk_shape`` (an edge chunk is
padded with the fill value). An uncompressed chunk as our stores write it (codecs ``bytes`` little-endian,
then ``crc32c``) is the chunk's C-order bytes followed by the crc32c of those bytes, 4 bytes little-endian.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

__all__ = ["ChunkPart", "chunk_key", "chunk_positions", "chunk_keys", "chunk_rank", "grid_shape", "parts_of",
           "CRC_BYTES", "encoded_size"]

#: bytes of the crc32c codec's trailer
CRC_BYTES = 4

Region = tuple[tuple[int, int], ...]


def grid_shape(shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks along each dimension."""
    return tuple(-(-n // c) for n, c in zip(shape, chunk_shape, strict=True))


def chunk_key(position: tuple[int, ...]) -> str:
    """The default-encoded key of the chunk at ``position`` (``c/0/1/0``; ``c`` alone for a 0-d array)."""
    return "/".join(("c", *map(str, position)))


def chunk_rank(position: tuple[int, ...], grid: tuple[int, ...]) -> int:
    """The index of the chunk at ``position`` in C order of a grid of shape ``grid`` (its chunk table entry)."""
    rank = 0
    for p, n in zip(position, grid, strict=True):
        rank = rank * n + p
    return rank


def chunk_positions(shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every grid position of an array, in C order (the order of the array's chunk table)."""
    return list(itertools.product(*(range(n) for n in grid_shape(shape, chunk_shape))))


def chunk_keys(shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> list[str]:
    """The keys of every chunk of an array, in C order."""
    return [chunk_key(p) for p in chunk_positions(shape, chunk_shape)]


def encoded_size(chunk_shape: tuple[int, ...], itemsize: int) -> int:
    """Bytes of an uncompressed chunk file: the whole chunk, then its crc32c."""
    return math.prod(chunk_shape) * itemsize + CRC_BYTES


@dataclass(frozen=True)
class ChunkPart:
    """One chunk's share of a region.

    Attributes:
        position: the chunk's grid position (its index in the chunk table is its C-order rank).
        inner: the part, in the chunk's own coordinates.
        outer: the part, in the region's coordinates (where it lands in the destination).
        whole: the part is the whole chunk and lands contiguously in a C-ordered destination of the region's
            shape, so the chunk's bytes can be read straight into place.
    """

    position: tuple[int, ...]
    inner: tuple[slice, ...]
    outer: tuple[slice, ...]
    whole: bool

    @property
    def key(self) -> str:
        return chunk_key(self.position)


def _contiguous(outer: Region, extent: tuple[int, ...]) -> bool:
    """Whether the block ``outer`` of a C-ordered array of shape ``extent`` is one contiguous run of memory."""
    dims = len(extent)
    # find the first dimension (from the left) whose range is not a single index; every later one must be full
    for d in range(dims):
        a, b = outer[d]
        if b - a != 1:
            return all(outer[k] == (0, extent[k]) for k in range(d + 1, dims))
    return True


def parts_of(region: Region, shape: tuple[int, ...], chunk_shape: tuple[int, ...]) -> list[ChunkPart]:
    """The chunks ``region`` (``((start, stop), ...)`` per dimension, within ``shape``) touches, in C order."""
    extent = tuple(b - a for a, b in region)
    axes = []
    for (a, b), c, n in zip(region, chunk_shape, shape, strict=True):
        if not 0 <= a <= b <= n:
            raise ValueError(f"region {region} is outside the array's shape {shape}")
        axes.append([(k // c, max(a, k), min(b, k + c)) for k in range(a - a % c, b, c)])
    parts = []
    for combo in itertools.product(*axes):
        position = tuple(p for p, _, _ in combo)
        inner = tuple((lo - p * c, hi - p * c) for (p, lo, hi), c in zip(combo, chunk_shape, strict=True))
        outer = tuple((lo - r0, hi - r0) for (_, lo, hi), (r0, _) in zip(combo, region, strict=True))
        full = all(i == (0, c) for i, c in zip(inner, chunk_shape, strict=True))
        parts.append(ChunkPart(position, tuple(slice(a, b) for a, b in inner),
                               tuple(slice(a, b) for a, b in outer), full and _contiguous(outer, extent)))
    return parts
