"""Reading a resharded store (``reshard`` / ``fetch --reshard``) as an export source, in bounded memory.

The store is read only through its public face, :class:`grokweights.store.Store` (``read(path, region)``,
``plan``, ``config``). The output is byte for byte what exporting the ``ckpt-0/`` the store came from
writes, because the values are the same and go through the same kernels (``_source.matrix_tasks``):

* an int8 weight is read with its float32 scales (the release's bfloat16 values, exactly). The store
  repeats scale rows so that its blocks line up with a mesh's shards; every ``k``-th row is taken back,
  which gives the release's scales, then the weight is transposed, dequantised and encoded as from a shard;
* a plain array (the float32 embedding, norms, router) is read as float32, as the shard holds it;
* a ``bfloat16`` store (``reshard --dtype bfloat16``) holds the dequantised weights already rounded to
  bfloat16 (nearest-even, as the export rounds): a ``bf16`` export from it is the same bytes; ``f32`` and
  ``f16`` exports carry the store's bfloat16 values.

Memory: a transposed matrix is read one expert at a time (Grok-1: 6144 x 32768 int8, 192 MiB), a plain
matrix in row bands of about ``BAND_BYTES``; the next read overlaps the encoding of the current one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from ..checkpoint.config import ModelConfig
from ..checkpoint.dtypes import ITEMSIZE, numpy_dtype
from ..errors import LayoutMismatchError, UsageError
from ._int8 import int8_tasks
from ._readbuf import BufferPool, released
from ._source import matrix_tasks
from ._tensor import OutTensor

__all__ = ["StoreSource", "open_source", "is_store", "BAND_BYTES"]

#: bytes of one row band of a plain (not transposed) array read from the store.
BAND_BYTES = 64 * 2**20
_READER: ThreadPoolExecutor | None = None


def _reader() -> ThreadPoolExecutor:
    """The one thread that reads ahead (the next expert or band while the workers encode this one)."""
    global _READER
    if _READER is None:
        _READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grokweights-export-read")
    return _READER


class StoreSource:
    """The tensors of a finished store, with the interface of :class:`._source.CheckpointSource`.

    Args:
        path: the store (a local folder holding ``grokweights.json``, or a tensorstore URL).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from ..store import Store

        self.store = Store(path)
        self.config: ModelConfig = self.store.config
        self.paths = set(self.store.keys())
        self.plan = self.store.plan
        self._prefetched: dict[tuple[str, int | None], Future] = {}
        self._pool = BufferPool()

    @property
    def layers(self) -> list[int]:
        """The decoder layers the store holds."""
        kept = self.plan.layers
        return list(kept) if kept is not None else list(range(self.config.num_layers))

    def require_layers(self, chosen: list[int]) -> None:
        """Refuse layers the store does not hold (a store written with ``--layers``)."""
        missing = sorted(set(chosen) - set(self.layers))
        if missing:
            raise UsageError(f"{self.store.location}: the store holds decoder layers {_ranges(self.layers)}, not "
                             f"{_ranges(missing)}; pass --layers within them", path=self.store.location,
                             expected=self.layers, actual=missing)

    @property
    def holds_int8(self) -> bool:
        """Whether the store keeps the release's int8 weights (not ``reshard --dtype bfloat16``)."""
        return any(path.endswith("/scales") for path in self.paths)

    def _parts(self, key: str) -> tuple[str, str | None]:
        """The store paths of ``key``'s weight (or plain array) and scales (None for a plain array)."""
        if f"{key}/weight" in self.paths and f"{key}/scales" in self.paths:
            return f"{key}/weight", f"{key}/scales"
        if key in self.paths:
            return key, None
        raise LayoutMismatchError(f"{self.store.location}: no array for {key} in the store", path=self.store.location,
                                  expected=key, actual="missing")

    def _read(self, path: str, region: tuple[slice, ...] = ()) -> np.ndarray:
        return np.ascontiguousarray(self.store.read(path, region))

    def _read_pooled(self, path: str, lead: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, Callable[[], None]]:
        """The region (``lead`` bounds, whole trailing axes) read into a buffer of the pool, and its release."""
        array = self.plan.array(path)
        bounds = (*lead, *((0, n) for n in array.shape[len(lead):]))
        if not hasattr(self.store, "read_into"):  # a Store without it: a fresh array
            return self._read(path, tuple(slice(a, b) for a, b in bounds)), lambda: None
        buf, flat = self._pool.take(tuple(b - a for a, b in bounds), numpy_dtype(array.dtype))
        self.store.read_into(path, bounds, buf).result()
        return buf, lambda: self._pool.give(flat)

    def _matrix(self, key: str, expert: int | None) -> tuple[np.ndarray, np.ndarray | None, Callable[[], None]]:
        """One expert's (or the whole tensor's) weight, its release-blocked scales, and the weight's release."""
        weight_path, _ = self._parts(key)
        weight, release = self._read_pooled(weight_path, () if expert is None else ((expert, expert + 1),))
        return (weight if expert is None else weight[0]), self._scales(key, expert), release

    def _scales(self, key: str, expert: int | None) -> np.ndarray | None:
        """The release's block scales of one expert (or of the whole tensor); None for a plain array."""
        weight_path, scales_path = self._parts(key)
        if scales_path is None:
            return None
        weight_rows = self.plan.array(weight_path).shape[-2]
        lead = () if expert is None else (slice(expert, expert + 1),)
        scales = self._read(scales_path, lead)
        scales = scales if expert is None else scales[0]
        blocks = self.plan.array(scales_path).source_blocks or scales.shape[-2]
        if scales.shape[-2] % blocks or weight_rows % scales.shape[-2]:
            raise LayoutMismatchError(f"{self.store.location}: {scales_path} has {scales.shape[-2]} scale rows for "
                                      f"{blocks} release blocks of {weight_rows} rows", path=scales_path,
                                      expected=blocks, actual=scales.shape[-2])
        return np.ascontiguousarray(scales[::scales.shape[-2] // blocks])

    def _ahead(self, key: str, expert: int | None) -> Future:
        """The read of one expert's (or the tensor's) weight and scales, and the next expert's started behind it:
        an export that writes experts as tensors of their own still reads ahead."""
        pending = self._prefetched.pop((key, expert), None) or _reader().submit(self._matrix, key, expert)
        self._prefetched.clear()  # at most one read ahead
        weight_path, _ = self._parts(key)
        experts = self.plan.array(weight_path).shape[0] if len(self.plan.array(weight_path).shape) == 3 else 0
        if expert is not None and expert + 1 < experts:
            self._prefetched[(key, expert + 1)] = _reader().submit(self._matrix, key, expert + 1)
        return pending

    def _units(self, tensor: OutTensor) -> list[Callable[[], tuple[np.ndarray, np.ndarray | None, Callable]]]:
        """Reads of the pieces the tensor is written from, in order: experts (of a stacked tensor), whole matrices or
        row bands."""
        weight_path, _ = self._parts(tensor.source)
        array = self.plan.array(weight_path)
        shape = array.shape
        if len(shape) == 3:
            return [lambda e=e: self._matrix(tensor.source, e) for e in range(shape[0])]
        if tensor.transpose or len(shape) == 1:
            return [lambda: self._matrix(tensor.source, None)]
        rows = shape[0]
        row_bytes = int(np.prod(shape[1:])) * ITEMSIZE[array.dtype]
        step = max(1, BAND_BYTES // max(1, row_bytes))
        chunk = array.chunk_shape[0]
        step = max(chunk, step - step % chunk)
        return [lambda r0=r0: (lambda band: (band[0], None, band[1]))(
            self._read_pooled(weight_path, ((r0, min(rows, r0 + step)),))) for r0 in range(0, rows, step)]

    def blocks(self, tensor: OutTensor) -> Iterator[Callable[[str], np.ndarray]]:
        """The output tensor as tasks of whole output rows, in order (see ``CheckpointSource.blocks``)."""
        if tensor.part is not None:  # a compressed-tensors part of one int8 matrix
            weight_path, _ = self._parts(tensor.source)
            shape = self.plan.array(weight_path).shape[-2:]
            if tensor.part != "packed":
                yield from int8_tasks(lambda: None, lambda: self._scales(tensor.source, tensor.expert), shape,
                                      tensor, matrix_tasks)
                return
            values, _, release = self._ahead(tensor.source, tensor.expert).result()
            yield from released(int8_tasks(lambda: values, lambda: None, shape, tensor, matrix_tasks), release)
            return
        if tensor.expert is not None:  # one expert, a tensor of its own: the next expert is read meanwhile
            weight, scales, release = self._ahead(tensor.source, tensor.expert).result()
            yield from released(matrix_tasks(weight, scales, tensor.transpose), release)
            return
        units = self._units(tensor)
        pending: Future | None = _reader().submit(units[0])
        for i in range(len(units)):
            weight, scales, release = pending.result()
            pending = _reader().submit(units[i + 1]) if i + 1 < len(units) else None  # read ahead
            yield from released(matrix_tasks(weight, scales, tensor.transpose and weight.ndim == 2), release)
            del weight, scales


def _ranges(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    out: list[str] = []
    for n in sorted(layers):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out) or "none"


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a store, not a checkpoint (decided by :func:`grokweights.checkpoint.paths.source_kind`)."""
    from ..checkpoint.paths import STORE, source_kind

    return source_kind(path) == STORE


def open_source(path: str | os.PathLike[str], config: ModelConfig | str | None):
    """The export source at ``path``: a :class:`StoreSource` or a ``CheckpointSource``, and its model config."""
    if not is_store(path):
        from ..checkpoint.inspection import checkpoint_config
        from ._source import CheckpointSource

        cfg = checkpoint_config(path, config)
        return CheckpointSource(path, cfg), cfg
    source = StoreSource(path)
    if config is not None:
        from ..checkpoint.config import preset

        wanted = preset(config) if isinstance(config, str) else config
        if wanted != source.config:
            raise UsageError(f"{path}: the store's model config differs from the one given; leave the config out "
                             "to export the store's model", path=path, expected=source.config.to_dict(),
                             actual=wanted.to_dict())
    return source, source.config
