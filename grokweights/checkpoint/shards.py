"""Read and write official checkpoint shards: safe, zero-copy reads and byte-exact, streamed writes.

Reading never unpickles: :mod:`.pickle_parse` parses the stream against an allow-list and
the payloads are returned as read-only numpy views of a memory map of the file, so opening or
inspecting a 3 GB shard costs kilobytes of RAM until the data is touched.

Writing produces the release's exact byte stream (numpy 1.x spelling under any numpy), so the upstream
loader reads what we write; payloads are streamed from arrays or from chunk generators, to a temporary
name that is renamed into place only when complete.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_file
from ..constants import CKPT_DIRNAME, WRITE_CHUNK_BYTES
from ..errors import GrokWeightsError, ShardFormatError
from .files import open_regular
from .layout import TensorSpec
from .pickle_desc import NUMPY1_MODULE, ArrayDesc, QuantizedDesc, ShardDesc
from .pickle_encode import encode, payload_sizes
from .pickle_parse import ParsedArray, ParsedShard, parse
from .quant import dequantize

__all__ = [
    "QuantizedWeight8bit", "LazyArray", "ShardHeader", "read_header", "read_shard", "write_shard",
    "write_checkpoint", "drop_pages",
]


@dataclass(frozen=True)
class QuantizedWeight8bit:
    """An int8 weight with bfloat16 block scales, as the release stores most weights.

    ``scales`` has the weight's shape except on the input (second to last) axis, where it has
    ``blocks`` rows: row ``i`` of the weight uses scale row ``i // (in / blocks)``.
    """

    weight: Any
    scales: Any

    def dequantize(self, dtype: Any = np.float32) -> np.ndarray:
        """The weight as ``dtype`` (float32 by default), scales applied."""
        return dequantize(self.weight, self.scales, dtype=dtype)


@dataclass(frozen=True)
class LazyArray:
    """An array to be written without ever existing whole: a header and a generator of C-order chunks.

    ``chunks()`` yields arrays whose bytes, concatenated, are the payload (any shapes; the dtype must
    match).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Callable[[], Iterable[np.ndarray]]

    @property
    def desc(self) -> ArrayDesc:
        return ArrayDesc(tuple(self.shape), np.dtype(self.dtype))


ArraySource = np.ndarray | LazyArray
ShardValue = np.ndarray | LazyArray | QuantizedWeight8bit


@dataclass(frozen=True)
class ShardHeader:
    """A parsed shard header: kind, array shapes/dtypes and payload offsets; no data read."""

    path: str
    parsed: ParsedShard

    @property
    def kind(self) -> str:
        return self.parsed.kind

    @property
    def desc(self) -> ShardDesc:
        return self.parsed.desc

    @property
    def header_bytes(self) -> int:
        """Bytes of the file that are not payload."""
        return self.parsed.file_size - sum(a.payload.nbytes for a in self.parsed.arrays)


_FIX = "replace it with the shard file (re-fetch it)"


def read_header(path: str | os.PathLike[str]) -> ShardHeader:
    """Parse a shard's header (reads kilobytes, whatever the file size).

    Raises:
        UnsafePickleError: the file asks for anything outside the release's allow-list.
        ShardFormatError: the file is truncated, has trailing bytes, or is inconsistent.
    """
    path = os.fspath(path)
    try:
        with open_regular(path, what="shard", fix=_FIX, buffering=64 * 1024) as f:
            size = os.fstat(f.fileno()).st_size
            return ShardHeader(path, parse(f, path=path, size=size))
    except FileNotFoundError:
        raise GrokWeightsError(f"{path}: no such shard file; {_FIX}", path=path) from None
    except PermissionError:
        raise GrokWeightsError(f"{path}: permission denied reading this shard; make it readable", path=path) from None


def _view(mm: mmap.mmap, array: ParsedArray) -> np.ndarray:
    desc = array.desc
    count = math.prod(desc.shape)
    flat = np.frombuffer(mm, dtype=desc.dtype.dtype, count=count, offset=array.payload.offset)
    return flat.reshape(desc.shape, order="F" if array.fortran else "C")


def read_shard(path: str | os.PathLike[str]) -> np.ndarray | QuantizedWeight8bit:
    """Open a shard: read-only numpy arrays that are memory-mapped views of the file's payload bytes."""
    header = read_header(path)
    with open_regular(header.path, what="shard", fix=_FIX) as f:
        if os.fstat(f.fileno()).st_size != header.parsed.file_size:
            raise ShardFormatError(f"{header.path}: the shard changed while it was read; {_FIX}", path=header.path)
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    arrays = [_view(mm, a) for a in header.parsed.arrays]
    if header.kind == "quantized":
        return QuantizedWeight8bit(weight=arrays[0], scales=arrays[1])
    return arrays[0]


_PAGE = mmap.PAGESIZE


def _mmap_of(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    return base


def drop_pages(view: np.ndarray | None) -> None:
    """Unmap the pages of ``view``, a contiguous view of a memory-mapped shard; the page cache keeps them.

    Only read-only maps (the shards' own) are touched: a writable map may hold the only copy of its bytes (an
    anonymous buffer of a pool), and a reused buffer's pages are worth keeping anyway.
    """
    mm = _mmap_of(view) if view is not None else None
    if mm is None or view.size == 0:
        return
    with memoryview(mm) as whole:
        if not whole.readonly:
            return
    start = view.ctypes.data - np.frombuffer(mm, np.uint8, count=1).ctypes.data
    stop = start + view.nbytes
    if not 0 <= start < stop <= len(mm):
        return
    start -= start % _PAGE
    try:
        mm.madvise(mmap.MADV_DONTNEED, start, min(len(mm), stop) - start)
    except (OSError, ValueError, AttributeError):  # best effort: only memory is at stake
        pass


# ---------------------------------------------------------------------------------------------- write


def _desc_of(value: ShardValue) -> ShardDesc:
    if isinstance(value, QuantizedWeight8bit):
        return QuantizedDesc(_desc_of(value.weight), _desc_of(value.scales))  # type: ignore[arg-type]
    if isinstance(value, LazyArray):
        return value.desc
    if isinstance(value, np.ndarray):
        return ArrayDesc(tuple(value.shape), value.dtype)
    raise TypeError(f"cannot write a {type(value).__name__} to a shard (numpy array, LazyArray or "
                    "QuantizedWeight8bit expected)")


def _chunks(source: ArraySource) -> Iterator[memoryview]:
    if isinstance(source, LazyArray):
        for chunk in source.chunks():
            chunk = np.ascontiguousarray(chunk)
            if chunk.dtype != source.dtype:
                raise TypeError(f"chunk of dtype {chunk.dtype} for an array of dtype {source.dtype}")
            yield memoryview(chunk.reshape(-1).view(np.uint8))
        return
    flat = np.ascontiguousarray(source).reshape(-1).view(np.uint8)
    for start in range(0, flat.size, WRITE_CHUNK_BYTES):
        yield memoryview(flat[start:start + WRITE_CHUNK_BYTES])


def write_shard(path: str | os.PathLike[str], value: ShardValue, *,
                numpy_module: str = NUMPY1_MODULE, fsync: bool = False) -> int:
    """Write one shard in the release's byte format; returns its size in bytes.

    ``value`` is a numpy array, a :class:`LazyArray`, or a :class:`QuantizedWeight8bit` of those. The
    file appears under its name only once complete (written to a temporary name, then renamed).
    """
    path = Path(path)
    desc = _desc_of(value)
    sources: list[ArraySource] = (
        [value.weight, value.scales] if isinstance(value, QuantizedWeight8bit) else [value])  # type: ignore[list-item]
    sizes = payload_sizes(desc)
    written = 0
    with atomic_file(path, fsync=fsync) as f:
        for segment in encode(desc, numpy_module=numpy_module):
            if isinstance(segment, bytes):
                written += f.write(segment)
                continue
            start = written
            for chunk in _chunks(sources[segment]):
                written += f.write(chunk)
            if written - start != sizes[segment]:
                raise ShardFormatError(
                    f"{path}: payload {segment} produced {written - start} bytes, expected {sizes[segment]}",
                    path=str(path), expected=sizes[segment], actual=written - start)
    return written


def write_checkpoint(directory: str | os.PathLike[str], specs: Iterable[TensorSpec],
                     params: Mapping[str, Mapping[str, ShardValue]] | Callable[[TensorSpec], ShardValue], *,
                     numpy_module: str = NUMPY1_MODULE,
                     on_written: Callable[[TensorSpec, int], None] | None = None) -> Path:
    """Write ``directory/ckpt-0/tensor*_000`` for ``specs``, each value checked against its spec.

    ``params`` is the haiku-style nested dict (``params[path][name]``) or a function of the spec.
    Returns the ``ckpt-0`` directory.
    """
    ckpt = Path(directory) / CKPT_DIRNAME
    ckpt.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        value = params(spec) if callable(params) else params[spec.path][spec.name]
        desc = _desc_of(value)
        if desc != spec.desc:
            raise ShardFormatError(f"value for {spec.key} is {desc}, the layout expects {spec.desc}",
                                   path=spec.key, expected=spec.desc, actual=desc)
        size = write_shard(ckpt / spec.file, value, numpy_module=numpy_module)
        if on_written is not None:
            on_written(spec, size)
    return ckpt
