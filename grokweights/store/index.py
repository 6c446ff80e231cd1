"""A finished store seen from Python: its index (``grokweights.json``), plan and lazy per-array handles.

:class:`Store` is what ``grokweights.open`` returns and what ``load`` reads through.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from ..checkpoint.config import ModelConfig
from ..constants import STORE_INDEX_NAME
from ..errors import StoreError
from ..sharding.mesh import MeshSpec, RuleSet
from ..sharding.plan import ArrayPlan, ReshardPlan
from .kv import context, open_array, read_key
from .specs import kvstore_spec, zarr3_spec

__all__ = ["Store", "read_index", "INDEX_FORMAT"]

#: the ``format`` of a store index.
INDEX_FORMAT = "grokweights.store"


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


