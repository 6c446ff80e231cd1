"""TensorStore, at the edge: the only module that opens stores and key-value stores.

Specs are plain dicts built by pure functions (:func:`kvstore_spec`, :func:`zarr3_spec`); the functions
that open them (:func:`open_array`, :func:`open_kvstore`) are thin. Every store shares one process-wide
:class:`tensorstore.Context` root, so ``memory://`` stores written by ``reshard`` can be loaded by
``load`` in the same process; each operation gets a child context with its own concurrency limits.

An array is written *unpublished* first (chunks only, no ``zarr.json``: opened with
``assume_metadata``) and *published* by writing its ``zarr.json`` last, so no reader (tensorstore,
zarr-python) ever opens an array whose chunks are not all written.

:class:`Store` is a finished store seen from Python: its index (``grokweights.json``), plan and lazy
per-array handles (what ``grokweights.open`` returns).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .config import ModelConfig
from .constants import STORE_INDEX_NAME
from .errors import StoreError, UsageError
from .mesh import MeshSpec, RuleSet
from .plan import ArrayPlan, ReshardPlan

__all__ = ["Store", "read_index", "INDEX_FORMAT",
           "kvstore_spec", "join", "zarr3_spec", "codecs_for", "context", "open_array", "open_kvstore",
           "read_into", "make_durable", "read_key", "write_key", "delete_prefix", "local_path", "ZARR_DTYPES"]

#: the ``format`` of a store index.
INDEX_FORMAT = "grokweights.store"
#: our dtype names -> zarr3 data types.
ZARR_DTYPES = {"float32": "float32", "int8": "int8", "bfloat16": "bfloat16"}

_ROOT: Any = None


def kvstore_spec(location: str | os.PathLike[str]) -> dict[str, Any]:
    """The kvstore spec of a store location: a local path, ``file://``, ``memory://``, ``gs://``, ``s3://``."""
    text = os.fspath(location)
    if "://" not in text:
        return {"driver": "file", "path": os.path.abspath(text).rstrip("/") + "/"}
    url = urlparse(text)
    rest = (url.netloc + url.path).strip("/")
    if url.scheme == "file":
        return {"driver": "file", "path": os.path.abspath(url.netloc + url.path).rstrip("/") + "/"}
    if url.scheme == "memory":
        return {"driver": "memory", "path": rest + "/" if rest else ""}
    if url.scheme in ("gs", "s3"):
        path = url.path.strip("/")
        return {"driver": "gcs" if url.scheme == "gs" else "s3", "bucket": url.netloc,
                "path": path + "/" if path else ""}
    raise UsageError(f"unsupported store location {text!r}: use a local path or a file://, memory://, gs:// or "
                     "s3:// URL", expected="path|file://|memory://|gs://|s3://", actual=text)


def local_path(kvstore: dict[str, Any]) -> str | None:
    """The local directory of a ``file`` kvstore, else None."""
    return kvstore["path"] if kvstore.get("driver") == "file" else None


def join(kvstore: dict[str, Any], *parts: str) -> dict[str, Any]:
    """``kvstore`` with ``parts`` appended to its path (as a directory)."""
    path = kvstore.get("path", "") + "/".join(p.strip("/") for p in parts if p)
    return {**kvstore, "path": path.rstrip("/") + "/"}


def codecs_for(codec: str) -> list[dict[str, Any]]:
    """zarr3 codecs for ``none`` or ``zstd:LEVEL`` (little-endian bytes, then compression)."""
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if codec.startswith("zstd"):
        level = int(codec.partition(":")[2] or 1)
        codecs.append({"name": "zstd", "configuration": {"level": level, "checksum": False}})
    return codecs


def zarr3_spec(kvstore: dict[str, Any], path: str, *, shape: tuple[int, ...], dtype: str,
               chunk_shape: tuple[int, ...], codec: str = "none",
               attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TensorStore spec of one zarr3 array at ``kvstore``/``path``."""
    metadata: dict[str, Any] = {
        "shape": list(shape), "data_type": ZARR_DTYPES[dtype],
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk_shape)}},
        "chunk_key_encoding": {"name": "default"}, "codecs": codecs_for(codec), "fill_value": 0,
    }
    if attributes is not None:
        metadata["attributes"] = attributes
    return {"driver": "zarr3", "kvstore": join(kvstore, path), "metadata": metadata}


def context(*, jobs: int | None = None, sync: bool = True, memmap: bool = False) -> Any:
    """A child of the process-wide root context with ``jobs`` concurrent copies and file operations.

    ``memmap`` reads local files through memory maps (one copy fewer: measured ~1.4x faster loads).
    """
    import tensorstore as ts

    global _ROOT
    if _ROOT is None:
        _ROOT = ts.Context()
    spec: dict[str, Any] = {"file_io_sync": sync}
    if memmap:
        spec["file_io_mode"] = {"mode": "memmap"}
    if jobs:
        spec["data_copy_concurrency"] = {"limit": jobs}
        spec["file_io_concurrency"] = {"limit": max(2, jobs * 2)}
    return ts.Context(spec, parent=_ROOT)


def open_array(spec: dict[str, Any], *, mode: str = "open", ctx: Any = None) -> Any:
    """Open a zarr3 array: ``open`` (must exist), ``unpublished`` (write chunks without metadata) or
    ``publish`` (create its ``zarr.json``)."""
    import tensorstore as ts

    kwargs = {"open": {"open": True}, "unpublished": {"open": True, "assume_metadata": True},
              "publish": {"create": True}}[mode]
    try:
        return ts.open(spec, context=ctx if ctx is not None else context(), **kwargs).result()
    except ValueError as exc:
        where = spec["kvstore"].get("path", "")
        raise StoreError(f"{where}: cannot open zarr3 array ({mode}): {exc}", path=where) from None


def read_index(dst: str | os.PathLike[str], *, ctx: Any = None) -> dict[str, Any] | None:
    """The store index of ``dst`` (``grokweights.json``), or None when absent (not a finished store)."""
    raw = read_key(kvstore_spec(dst), STORE_INDEX_NAME, ctx=ctx)
    if raw is None:
        return None
    try:
        index = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"{dst}/{STORE_INDEX_NAME}: not valid JSON ({exc})", path=os.fspath(dst)) from None
    if index.get("format") != INDEX_FORMAT:
        raise StoreError(f"{dst}/{STORE_INDEX_NAME}: not a grokweights store index", path=os.fspath(dst),
                         expected=INDEX_FORMAT, actual=index.get("format"))
    return index


class Store:
    """A resharded store opened for inspection: its index, plan and lazy per-array handles.

    ``store["transformer/decoder_layer_0/moe/linear/w/weight"]`` is a ``tensorstore.TensorStore``
    (opened on first use); :meth:`read` returns numpy data; :meth:`sha256` recomputes an array's digest.
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.location = os.fspath(location)
        self.kvstore = kvstore_spec(location)
        self._ctx = context(memmap=True)
        index = read_index(location, ctx=self._ctx)
        if index is None:
            raise StoreError(f"{self.location}: no {STORE_INDEX_NAME} here: not a grokweights store, or a reshard "
                             "that has not finished (rerun `grokweights reshard` to complete it)",
                             path=self.location, expected=STORE_INDEX_NAME)
        self.index = index
        self.plan = ReshardPlan.from_dict(index["plan"])
        self.config = ModelConfig.from_dict(index["config"], source=f"{self.location}/{STORE_INDEX_NAME}")
        self._open: dict[str, Any] = {}

    @property
    def mesh(self) -> MeshSpec:
        return self.plan.mesh

    @property
    def rules(self) -> RuleSet:
        return self.plan.rules

    def keys(self) -> list[str]:
        """The store paths of every array."""
        return [a.store_path for a in self.plan.arrays]

    def __getitem__(self, store_path: str) -> Any:
        if store_path not in self._open:
            array = self._array(store_path)
            spec = zarr3_spec(self.kvstore, array.store_path, shape=array.shape, dtype=array.dtype,
                                   chunk_shape=array.chunk_shape, codec=array.codec)
            self._open[store_path] = open_array(spec, mode="open", ctx=self._ctx)
        return self._open[store_path]

    def _array(self, store_path: str) -> ArrayPlan:
        try:
            return self.plan.array(store_path)
        except KeyError:
            raise StoreError(f"{self.location}: no array {store_path!r} in the store", path=self.location,
                             actual=store_path) from None

    def read(self, store_path: str, region: tuple[slice, ...] = ()) -> np.ndarray:
        return np.asarray(self[store_path][region].read().result())

    def sha256(self, store_path: str) -> str:
        """The sha256 of an array's logical data (C order), read back row by row."""
        array, digest = self._array(store_path), hashlib.sha256()
        step = array.chunk_shape[0]
        for r0 in range(0, array.shape[0], step):
            digest.update(np.ascontiguousarray(self.read(store_path, (slice(r0, r0 + step),))).view(np.uint8))
        return digest.hexdigest()

    def __repr__(self) -> str:
        return f"Store({self.location!r}, mesh={self.mesh}, rules={self.rules.name}, arrays={len(self.plan.arrays)})"


def read_into(view: Any, out: Any) -> Any:
    """Start reading the tensorstore ``view`` into the numpy array ``out`` (same shape); returns a future."""
    import tensorstore as ts

    return ts.array(out, copy=False, write=True).write(view)


def make_durable(kvstore: dict[str, Any]) -> None:
    """Flush written data of a local store to disk (``syncfs`` of its file system; ``sync`` if unavailable).

    One call per array replaces an ``fsync`` per chunk file, which stalls tensorstore's writer threads.
    Stores on other drivers (gcs, s3) are durable once a write completes; ``memory`` is never durable.
    """
    path = local_path(kvstore)
    if path is None:
        return
    probe = path
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    fd = os.open(probe, os.O_RDONLY)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def open_kvstore(kvstore: dict[str, Any], *, ctx: Any = None) -> Any:
    import tensorstore as ts

    return ts.KvStore.open(kvstore, context=ctx if ctx is not None else context()).result()


def read_key(kvstore: dict[str, Any], key: str, *, ctx: Any = None) -> bytes | None:
    """The value of ``key`` in ``kvstore``, or None when it does not exist."""
    result = open_kvstore(kvstore, ctx=ctx).read(key).result()
    return bytes(result.value) if result.state == "value" else None


def write_key(kvstore: dict[str, Any], key: str, value: bytes, *, ctx: Any = None) -> None:
    """Write ``key`` (a single atomic put on every driver)."""
    open_kvstore(kvstore, ctx=ctx).write(key, value).result()


def delete_prefix(kvstore: dict[str, Any], prefix: str, *, ctx: Any = None) -> None:
    """Delete every key under ``prefix`` (a directory, with trailing slash)."""
    import tensorstore as ts

    prefix = prefix.rstrip("/") + "/"
    kv = open_kvstore(kvstore, ctx=ctx)
    kv.delete_range(ts.KvStore.KeyRange(inclusive_min=prefix, exclusive_max=prefix[:-1] + "0")).result()
