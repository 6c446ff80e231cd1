"""A finished store seen from Python: its index, plan, and verified reads of any region of any array.

:class:`Store` is what ``grokweights.open`` returns and what ``load``, ``verify STORE`` and ``export`` read
through. Opening an array checks that its ``zarr.json`` is the one the index recorded for its path (and so its
record: plan entry, data digest, chunk table). Reads then take one of two paths, chosen per array:

* **fast** (uncompressed arrays of a local store): chunk files read straight into the destination, each
  chunk's crc32c checked in hardware against its trailer and against the chunk table (:mod:`.fastread`);
* **tensorstore** (compressed arrays, other kvstores such as ``gs://`` / ``s3://`` / ``memory://``, or when
  ``GROKWEIGHTS_STORE_IO=tensorstore``): tensorstore's zarr3 driver, which checks each chunk's crc32c; each chunk's
  trailer is first compared with the chunk table (4 bytes per chunk), so a moved chunk is refused there too.

Both paths return the same bytes and refuse the same damage with the same one-line errors (tested).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from typing import Any

import numpy as np

from ..checkpoint.config import ModelConfig
from ..checkpoint.dtypes import numpy_dtype
from ..constants import STORE_INDEX_NAME
from ..errors import StoreError
from ..sharding.mesh import MeshSpec, RuleSet
from ..sharding.plan import ArrayPlan, ReshardPlan
from .chunkfile import ChunkFault, check_place, chunk_error
from .chunks import chunk_rank, grid_shape, parts_of
from .fastread import LocalChunks
from .index import UNFINISHED, read_index, store_state
from .kv import chunk_trailer, context, open_array, read_into, read_small, use_tensorstore
from .specs import MAX_ZARR_JSON_BYTES, kvstore_spec, local_path, record_of, zarr3_spec

__all__ = ["Store", "Region", "MAX_ZARR_JSON_BYTES"]

Region = tuple[tuple[int, int], ...]


class Store:
    """A resharded store opened for reading: its index, plan and verified per-array reads.

    ``store.read(path, region)`` returns numpy data; ``store.read_into(path, region, out)`` fills a buffer;
    ``store[path]`` is the array's ``tensorstore.TensorStore``; :meth:`sha256` recomputes an array's digest.

    Args:
        location: a local path or tensorstore URL.
        io: ``auto`` (the fast path where it applies) or ``tensorstore``; default: ``GROKWEIGHTS_STORE_IO``.
    """

    def __init__(self, location: str | os.PathLike[str], *, io: str | None = None) -> None:
        self.location = os.fspath(location)
        self.kvstore = kvstore_spec(location)
        self.io = io or ("tensorstore" if use_tensorstore() else "auto")
        self._ctx = context(memmap=True)
        index = read_index(location, ctx=self._ctx)
        if index is None:
            if store_state(self.location) == UNFINISHED:
                raise StoreError(f"{self.location}: unfinished store (no {STORE_INDEX_NAME} yet): a reshard into it "
                                 "has not finished; rerun `grokweights reshard` to complete it", path=self.location,
                                 expected=STORE_INDEX_NAME)
            raise StoreError(f"{self.location}: no {STORE_INDEX_NAME} here: not a grokweights store, or a reshard "
                             "that has not finished (rerun `grokweights reshard` to complete it)",
                             path=self.location, expected=STORE_INDEX_NAME)
        self.index = index
        where = f"{self.location.rstrip('/')}/{STORE_INDEX_NAME}"
        try:
            self.plan = ReshardPlan.from_dict(index["plan"])
            self.config = ModelConfig.from_dict(index["config"], source=where)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{where}: the index's plan cannot be read ({str(exc)[:200]}); rerun `grokweights "
                             "reshard` into this store to rewrite it", path=where) from None
        self._records: dict[str, dict[str, Any]] = {}
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def mesh(self) -> MeshSpec:
        return self.plan.mesh

    @property
    def rules(self) -> RuleSet:
        return self.plan.rules

    def keys(self) -> list[str]:
        """The store paths of every array."""
        return [a.store_path for a in self.plan.arrays]

    def array(self, store_path: str) -> ArrayPlan:
        """The plan entry of an array."""
        try:
            return self.plan.array(store_path)
        except KeyError:
            raise StoreError(f"{self.location}: no array {store_path!r} in the store", path=self.location,
                             actual=store_path) from None

    def fast(self, store_path: str) -> bool:
        """Whether reads of this array take the fast path (local, uncompressed, not forced through tensorstore)."""
        return self.io != "tensorstore" and local_path(self.kvstore) is not None \
            and self.array(store_path).codec == "none"

    # ------------------------------------------------------------------------------------- binding

    def record(self, store_path: str) -> dict[str, Any]:
        """The array's record, once its ``zarr.json`` is proven to be the one the index recorded for its path
        (checked once per array and store object)."""
        with self._lock:
            if store_path not in self._records:
                self._records[store_path] = self._check_binding(self.array(store_path))
            return self._records[store_path]

    def chunk_table(self, store_path: str) -> list[int] | None:
        """The crc32c of every chunk (C order of the grid) as written, or None (a store written before tables)."""
        table = (self.record(store_path).get("chunks") or {}).get("crc32c")
        return table if isinstance(table, list) else None

    def _check_binding(self, array: ArrayPlan) -> dict[str, Any]:
        path = array.store_path
        where = f"{self.location.rstrip('/')}/{path}"
        fix = "rerun `grokweights reshard` into this store to rewrite it"
        raw = read_small(self.kvstore, f"{path}/zarr.json", limit=MAX_ZARR_JSON_BYTES, what="zarr.json", ctx=self._ctx)
        if raw is None:
            raise StoreError(f"{where}: array missing (no zarr.json); the store is damaged: {fix}", path=where)
        record = record_of(raw)
        try:
            bound = (record is not None and record.get("plan") == array.to_dict()
                     and record.get("sha256") == self.index["sha256"].get(path)
                     and hashlib.sha256(raw).hexdigest() == self.index["metadata"].get(path))
        except (KeyError, TypeError, AttributeError):  # an index whose tables are missing or not objects
            bound = False
        if not bound:
            raise StoreError(f"{where}: its zarr.json is not the one the store index recorded for this path (arrays "
                             f"moved or edited); {fix}", path=where)
        table = (record.get("chunks") or {}).get("crc32c")  # type: ignore[union-attr]
        count = math.prod(grid_shape(array.shape, array.chunk_shape))
        if table is not None and (not isinstance(table, list) or len(table) != count
                                  or not all(isinstance(v, int) and 0 <= v < 2**32 for v in table)):
            raise StoreError(f"{where}: its chunk table does not match its chunk grid; the store is damaged: {fix}",
                             path=where)
        return record  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------- reading

    def __getitem__(self, store_path: str) -> Any:
        """The array's ``tensorstore.TensorStore`` (its binding checked first)."""
        self.record(store_path)
        with self._lock:
            if store_path not in self._open:
                array = self.array(store_path)
                spec = zarr3_spec(self.kvstore, array.store_path, shape=array.shape, dtype=array.dtype,
                                  chunk_shape=array.chunk_shape, codec=array.codec)
                self._open[store_path] = open_array(spec, mode="open", ctx=self._ctx)
            return self._open[store_path]

    def read_into(self, store_path: str, region: Region, out: np.ndarray) -> Any:
        """Start reading ``region`` (``((start, stop), ...)``) of an array into ``out`` (C-contiguous, the
        region's shape); returns an object whose ``result()`` waits and returns ``out``.

        Raises (from ``result()`` or at once): :class:`StoreError` naming the array, the chunk and the fix.
        """
        array = self.array(store_path)
        table = self.chunk_table(store_path)
        if self.fast(store_path):
            folder = os.path.join(local_path(self.kvstore), *store_path.split("/"))  # type: ignore[arg-type]
            return LocalChunks(self.location, store_path, folder, array.shape, array.chunk_shape,
                               table).read_into(region, out)
        parts = parts_of(region, array.shape, array.chunk_shape)
        trailers = self._trailers(array, parts) if table is not None else []
        handle = self[store_path]
        futures = []
        for part in parts:
            source = handle[tuple(slice(r0 + s.start, r0 + s.stop) for s, (r0, _) in zip(part.outer, region,
                                                                                              strict=True))]
            futures.append(read_into(source, out[part.outer], where=(self.location, store_path)))
        return _All(futures, out, lambda: self._bound(array, trailers, table))

    def _trailers(self, array: ArrayPlan, parts: list[Any]) -> list[tuple[Any, int]]:
        """The checksum each chunk of ``parts`` carries (tensorstore path), read before tensorstore reads them:
        a chunk that is not a regular file (a FIFO would block tensorstore) or is missing is refused here."""
        out = []
        for part in parts:
            try:
                out.append((part, chunk_trailer(self.kvstore, f"{array.store_path}/{part.key}", ctx=self._ctx)))
            except ChunkFault as fault:
                raise chunk_error(self.location, array.store_path, part.key, fault.cause, fault.detail) from None
        return out

    def _bound(self, array: ArrayPlan, trailers: list[tuple[Any, int]], table: list[int] | None) -> None:
        """Once tensorstore read the chunks intact: each carries the checksum recorded for its position."""
        grid = grid_shape(array.shape, array.chunk_shape)
        for part, value in trailers:
            try:
                check_place(value, table[chunk_rank(part.position, grid)])  # type: ignore[index]
            except ChunkFault as fault:
                raise chunk_error(self.location, array.store_path, part.key, fault.cause, fault.detail) from None

    def read(self, store_path: str, region: tuple[slice, ...] = ()) -> np.ndarray:
        """Read ``region`` (slices) of an array as numpy; a bad chunk raises a one-line StoreError."""
        array = self.array(store_path)
        index = tuple(region) + (slice(None),) * (len(array.shape) - len(region))
        bounds = tuple(s.indices(n)[:2] for s, n in zip(index, array.shape, strict=True))
        bounds = tuple((a, max(a, b)) for a, b in bounds)
        out = np.empty(tuple(b - a for a, b in bounds), numpy_dtype(array.dtype))
        return self.read_into(store_path, bounds, out).result()

    def sha256(self, store_path: str) -> str:
        """The sha256 of an array's logical data (C order), read back one row of chunks at a time.

        Two row buffers are reused: the next row is read (and its chunks checked) while this one is hashed."""
        array, digest = self.array(store_path), hashlib.sha256()
        if not array.shape:
            digest.update(self.read(store_path).reshape(-1).view(np.uint8))
            return digest.hexdigest()
        step, rows = array.chunk_shape[0], array.shape[0]
        dtype = numpy_dtype(array.dtype)
        buffers = [np.empty((min(step, rows), *array.shape[1:]), dtype) for _ in range(2 if rows > step else 1)]

        def start(r0: int) -> Any:
            r1 = min(rows, r0 + step)
            out = buffers[(r0 // step) % len(buffers)][: r1 - r0]
            return self.read_into(store_path, ((r0, r1), *((0, n) for n in array.shape[1:])), out)

        pending = start(0)
        for r0 in range(0, rows, step):
            done = pending.result()
            pending = start(r0 + step) if r0 + step < rows else None
            digest.update(done.reshape(-1).view(np.uint8))
        return digest.hexdigest()

    def __repr__(self) -> str:
        return f"Store({self.location!r}, mesh={self.mesh}, rules={self.rules.name}, arrays={len(self.plan.arrays)})"


class _All:
    """Tensorstore reads of one region: ``result()`` waits for every one, runs ``then`` (the binding check) and
    returns the destination."""

    def __init__(self, futures: list[Any], out: np.ndarray, then: Any) -> None:
        self._futures, self._out, self._then = futures, out, then

    def result(self) -> np.ndarray:
        for future in self._futures:
            future.result()
        self._then()
        return self._out
