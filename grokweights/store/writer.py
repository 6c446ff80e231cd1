"""Write the arrays of a reshard plan: chunks first (unpublished), then the array's ``zarr.json``.

:class:`ArrayWriter` streams one store array from a memory-mapped source shard
(:func:`grokweights.checkpoint.shards.read_shard`), one row of chunks at a time: at most two rows are in
flight, and the pages of a finished row are dropped from the process's mapping, so peak memory is
bounded by the plan's row size, not by the tensor. Rows are hashed (sha256) on a second thread while the
chunks are written.

Uncompressed chunks are encoded here (:mod:`.chunkfile`): each chunk's bytes are gathered once into a reused
buffer (or taken in place where they are contiguous in the source), checksummed with the hardware crc32c and
written with one ``pwritev`` (local stores) or one put through tensorstore's key-value store (``gs://``,
``s3://``, ``memory://``): the same bytes tensorstore's zarr3 driver writes, which is how compressed arrays
(and every array under ``GROKWEIGHTS_STORE_IO=tensorstore``) are still written.

Once every chunk of an array is durable its ``zarr.json`` is written (on a background thread, while the next
array is being written), carrying the sha256 of its logical data, its plan entry, the source's identity and its
chunks as stored: their count, total size and the **chunk table**, the crc32c of every chunk in grid order,
which binds each chunk to its array and position (a reader refuses a chunk whose checksum is not the one
recorded for where it sits). An array is complete exactly when it has a ``zarr.json`` whose record matches and
every chunk it recorded is still there (:func:`completed`). Rewriting an array unpublishes it (deletes its
``zarr.json``) and overwrites every chunk; no chunk is deleted.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..checkpoint.dtypes import numpy_dtype
from ..checkpoint.quant import dequantize_region, expand_scales
from ..checkpoint.shards import drop_pages, read_shard
from ..errors import StoreError, WriteError
from ..sharding.plan import FORMAT_VERSION, ArrayPlan
from . import kv as tskv
from .chunkfile import ChunkFault, encode, scratch, write_chunk
from .chunks import chunk_key, chunk_keys, chunk_rank, grid_shape
from .specs import MAX_ZARR_JSON_BYTES, RECORD_KEY, local_path, record_of, zarr3_spec

__all__ = ["ArrayWriter", "completed", "chunk_stats", "source_identity"]

logger = logging.getLogger(__name__)

RowOf = Callable[[int, int, int], tuple[np.ndarray, "np.ndarray | None"]]


def source_identity(file: str, ckpt: str, sha256: str | None) -> dict[str, Any]:
    """What an array records of the shard it came from: file name, size and sha256 where the manifest knows it.

    Without a sha256 the identity is the file itself: its real path, inode, modification and change times, so
    that a rerun from another checkpoint (or a file changed in place) rewrites the array instead of keeping what
    another source wrote; with one, any copy with those bytes is the same source (a shard discarded after
    conversion, or the checkpoint moved, still matches).
    """
    path = os.path.join(ckpt, file)
    st = os.stat(path)
    identity: dict[str, Any] = {"file": file, "size": st.st_size, "sha256": sha256}
    if sha256 is None:
        identity["file_identity"] = {"path": os.path.realpath(path), "inode": st.st_ino, "mtime_ns": st.st_mtime_ns,
                                     "ctime_ns": st.st_ctime_ns}
    return identity


def _row_provider(array: ArrayPlan, source: Any) -> RowOf:
    """``row(r0, r1, slot) -> (data, source view)``: rows ``r0:r1`` of the stored array, and the memory-mapped
    source rows they were made from (whose pages are dropped once written), for one store array."""
    if array.role == "scales":
        data = expand_scales(np.asarray(source.scales), array.shape[-2]).astype(numpy_dtype(array.dtype))
        return lambda r0, r1, slot: (data[r0:r1], None)
    if array.source_kind == "quantized" and array.role == "array":
        weight, scales = source.weight, source.scales
        dtype = numpy_dtype(array.dtype)
        buffers: dict[int, np.ndarray] = {}

        def dequantized(r0: int, r1: int, slot: int) -> tuple[np.ndarray, np.ndarray]:
            shape = (r1 - r0, *array.shape[1:])
            buf = buffers.get(slot)
            if buf is None or buf.shape[0] < shape[0]:
                buf = buffers[slot] = np.empty(shape, dtype)
            return dequantize_region(weight, scales, (slice(r0, r1),), dtype, out=buf), weight[r0:r1]

        return dequantized
    data = source.weight if array.role == "weight" else source
    return lambda r0, r1, slot: (data[r0:r1], data[r0:r1])


def completed(array: ArrayPlan, kv: dict[str, Any], ctx: Any, source: dict[str, Any]) -> str | None:
    """The recorded sha256 when ``array`` is published, matches the plan and the source, and every chunk it
    recorded is there (same count; on a local store the same total size); None otherwise."""
    try:
        raw = tskv.read_small(kv, f"{array.store_path}/zarr.json", limit=MAX_ZARR_JSON_BYTES, what="zarr.json",
                              ctx=ctx)
    except StoreError as exc:  # a FIFO or an oversized file in its place: the array is rewritten
        logger.warning("%s; rewriting it", exc)
        return None
    if raw is None:
        return None
    record = record_of(raw)
    if record is None:
        return None
    if not (record.get("plan") == array.to_dict() and record.get("source") == source
            and record.get("sha256") and record.get("format") == FORMAT_VERSION):
        logger.info("%s: existing array does not match the plan; rewriting it", array.store_path)
        return None
    chunks = record.get("chunks")
    table = chunks.get("crc32c") if isinstance(chunks, dict) else None
    if not isinstance(table, list) or len(table) != math.prod(grid_shape(array.shape, array.chunk_shape)):
        logger.info("%s: written before chunk tables; rewriting it", array.store_path)
        return None
    if {k: v for k, v in chunks.items() if k != "crc32c"} != chunk_stats(array, kv, ctx):
        logger.warning("%s: published, but its chunks are not the ones it recorded; rewriting it", array.store_path)
        return None
    return record["sha256"]


def chunk_stats(array: ArrayPlan, kv: dict[str, Any], ctx: Any) -> dict[str, int] | None:
    """``{"count", "bytes"}`` of the array's chunks as stored (bytes -1 where sizes are unknown, i.e. not a
    local store); None when any chunk is missing."""
    sizes = tskv.key_sizes(kv, array.store_path, chunk_keys(array.shape, array.chunk_shape), ctx=ctx)
    if any(size is None for size in sizes.values()):
        return None
    known = all(size >= 0 for size in sizes.values())  # type: ignore[operator]
    return {"count": len(sizes), "bytes": sum(sizes.values()) if known else -1}  # type: ignore[arg-type]


def _write_error(kv: dict[str, Any], key: str, exc: BaseException) -> WriteError:
    """One line for a store write the file system refused (no space, file too large, read-only, ...)."""
    where = f"{(local_path(kv) or kv.get('path', '')).rstrip('/')}/{key}"
    why = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
    return WriteError(f"{where}: cannot write to the store ({why}); free space (or raise the file size limit) or "
                      "choose another destination, then rerun `grokweights reshard` into the store: complete arrays "
                      "are kept", path=where)


class ArrayWriter:
    """Writes plan arrays into the store at ``kv``; a context manager (leaving it waits for every publish).

    Args:
        kv: the store's kvstore spec.
        ctx: the tensorstore context to write with.
        sync: make each array's chunks durable (``syncfs`` of a local store) before publishing it.
        jobs: chunks encoded and written at once (default: the CPUs).
        progress: called with byte counts as rows are written.
    """

    def __init__(self, kv: dict[str, Any], ctx: Any, *, sync: bool = True, jobs: int | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.kv, self.ctx, self.sync = kv, ctx, sync
        self.progress = progress or (lambda n: None)
        self.root = local_path(kv)
        self.via_tensorstore = tskv.use_tensorstore()
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="sha256")
        self._chunks = ThreadPoolExecutor(max(1, jobs or os.cpu_count() or 2), thread_name_prefix="chunk-write")
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="publish")
        self._published: list[Future] = []

    def __enter__(self) -> ArrayWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if exc[0] is None:
                self.wait()
        finally:
            self._hasher.shutdown(wait=True)
            self._chunks.shutdown(wait=True)
            self._publisher.shutdown(wait=True)

    def wait(self) -> None:
        """Wait until every array written so far is published (raises the first publish error)."""
        published, self._published = self._published, []
        for future in published:
            future.result()

    def write(self, array: ArrayPlan, ckpt: str, source: dict[str, Any]) -> str:
        """Write ``array`` from its shard in ``ckpt`` and queue its publication; returns its sha256."""
        # unpublish only: every chunk is rewritten below, and no chunk is ever deleted
        tskv.delete_key(self.kv, f"{array.store_path}/zarr.json", ctx=self.ctx)
        shard = read_shard(os.path.join(ckpt, array.source_file))
        ours = array.codec == "none" and not self.via_tensorstore
        digest, table = self._write_chunks(array, shard, ours)
        record = {"format": FORMAT_VERSION, "plan": array.to_dict(), "source": source, "sha256": digest}
        self._published.append(self._publisher.submit(self._publish, array, record, table))
        logger.debug("wrote %s (%d bytes)", array.store_path, array.nbytes)
        return digest

    def _publish(self, array: ArrayPlan, record: dict[str, Any], table: list[int] | None) -> None:
        if self.sync:
            tskv.make_durable(self.kv)
        stats = chunk_stats(array, self.kv, self.ctx)
        if stats is None:
            raise StoreError(f"{array.store_path}: chunks vanished before the array was published (another writer "
                             "in this store?); rerun reshard", path=array.store_path)
        record["chunks"] = {**stats, "crc32c": table if table is not None else self._trailers(array)}
        spec = zarr3_spec(self.kv, array.store_path, shape=array.shape, dtype=array.dtype,
                          chunk_shape=array.chunk_shape, codec=array.codec, attributes={RECORD_KEY: record})
        tskv.open_array(spec, mode="publish", ctx=self.ctx)

    def _trailers(self, array: ArrayPlan) -> list[int]:
        """The chunk table of an array tensorstore wrote: each chunk's trailer, read back (4 bytes a chunk)."""
        table = []
        for key in chunk_keys(array.shape, array.chunk_shape):
            try:
                table.append(tskv.chunk_trailer(self.kv, f"{array.store_path}/{key}", ctx=self.ctx))
            except ChunkFault as fault:
                raise StoreError(f"{array.store_path}: chunk {key} {fault.cause} right after it was written (another "
                                 "writer in this store?); rerun reshard", path=array.store_path) from None
        return table

    def _write_chunks(self, array: ArrayPlan, source: Any, ours: bool) -> tuple[str, list[int] | None]:
        """Write every chunk of ``array`` (unpublished); ``(sha256 of its logical data, chunk table or None)``.

        ``ours``: encode the chunks here (the table is known as they are written); else through tensorstore
        (the table is read back from the chunks' trailers when the array is published)."""
        row_of = _row_provider(array, source)
        shape, chunk = array.shape, array.chunk_shape
        digest = hashlib.sha256()
        grid = grid_shape(shape, chunk)
        table: list[int] = [0] * math.prod(grid)
        put = self._encoder(array, table, grid) if ours else self._tensorstore(array)
        pending: list[tuple[list[Any], np.ndarray, np.ndarray | None]] = []

        def finish(entry: tuple[list[Any], np.ndarray, np.ndarray | None]) -> None:
            futures, data, consumed = entry
            for f in futures:
                try:
                    f.result()
                except ValueError as exc:  # a tensorstore write (compressed arrays)
                    raise _write_error(self.kv, array.store_path, exc) from None
            drop_pages(consumed)
            self.progress(data.nbytes)

        for slot, r0 in enumerate(range(0, shape[0], chunk[0]) if shape else [0]):
            r1 = min(shape[0], r0 + chunk[0]) if shape else 1
            if len(pending) == 2:
                finish(pending.pop(0))  # also frees the dequantisation buffer of this slot
            data, consumed = row_of(r0, r1, slot % 2)
            flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            futures: list[Any] = [self._hasher.submit(digest.update, flat)]
            for starts in itertools.product(*(range(0, n, c) for n, c in zip(shape[1:], chunk[1:], strict=True))):
                local = (slice(0, r1 - r0),) + tuple(slice(s, s + c) for s, c in zip(starts, chunk[1:], strict=True))
                position = ((r0 // chunk[0],) if shape else ()) + tuple(s // c for s, c in
                                                                       zip(starts, chunk[1:], strict=True))
                futures.append(put(position, data, local))
            pending.append((futures, data, consumed))
        for entry in pending:
            finish(entry)
        return digest.hexdigest(), (table if ours else None)

    def _tensorstore(self, array: ArrayPlan) -> Callable[..., Any]:
        spec = zarr3_spec(self.kv, array.store_path, shape=array.shape, dtype=array.dtype,
                          chunk_shape=array.chunk_shape, codec=array.codec)
        store = tskv.open_array(spec, mode="unpublished", ctx=self.ctx)

        def put(position: tuple[int, ...], data: np.ndarray, local: tuple[slice, ...]) -> Any:
            r0 = position[0] * array.chunk_shape[0] if position else 0
            return store[(slice(r0, r0 + local[0].stop),) + local[1:]].write(data[local])

        return put

    def _encoder(self, array: ArrayPlan, table: list[int], grid: tuple[int, ...]) -> Callable[..., Any]:
        """``put(position, rows, local)``: encode and write one chunk on a worker thread (records its crc32c)."""
        chunk = array.chunk_shape
        kvs = tskv.open_kvstore(self.kv, ctx=self.ctx) if self.root is None else None

        def encode_one(position: tuple[int, ...], data: np.ndarray, local: tuple[slice, ...]) -> None:
            part = data[local]
            if part.shape == tuple(chunk) and part.flags.c_contiguous:
                block = part.reshape(-1).view(np.uint8)  # contiguous in the source: written from there
            else:  # gathered once into this thread's buffer; an edge chunk is padded with the fill value (0)
                buf = scratch(math.prod(chunk) * part.dtype.itemsize)
                whole = buf.view(part.dtype).reshape(chunk)
                if part.shape != tuple(chunk):
                    whole[...] = 0
                whole[tuple(slice(0, n) for n in part.shape)] = part
                block = buf
            key = f"{array.store_path}/{chunk_key(position)}"
            rank = chunk_rank(position, grid)
            try:
                if kvs is None:
                    table[rank] = write_chunk(os.path.join(self.root, *key.split("/")), memoryview(block))
                else:
                    table[rank], trailer = encode(memoryview(block))
                    kvs.write(key, block.tobytes() + trailer).result()
            except (OSError, ValueError) as exc:  # ValueError: tensorstore's kvstore
                raise _write_error(self.kv, key, exc) from None

        return lambda position, data, local: self._chunks.submit(encode_one, position, data, local)
