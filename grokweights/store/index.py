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
from ..constants import STORE_INDEX_NAME, STORE_LOCK_NAME
from ..errors import StoreError
from ..sharding.mesh import MeshSpec, RuleSet
from ..sharding.plan import FORMAT_VERSION, ArrayPlan, ReshardPlan
from .kv import context, open_array, read_error, read_key
from .specs import kvstore_spec, record_of, zarr3_spec

__all__ = ["Store", "read_index", "index_digest", "store_state", "INDEX_FORMAT", "FINISHED", "UNFINISHED"]

#: the ``format`` of a store index.
INDEX_FORMAT = "grokweights.store"
FINISHED, UNFINISHED = "finished", "unfinished"
_FIELDS = {"plan": dict, "sha256": dict, "metadata": dict, "config": dict, "mesh": dict, "rules": dict}


def index_digest(index: dict[str, Any]) -> str:
    """The sha256 of an index without its ``digest`` field (canonical JSON: sorted keys, no spaces)."""
    body = {k: v for k, v in index.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def store_state(path: str | os.PathLike[str]) -> str | None:
    """``finished`` (a local folder with a store index), ``unfinished`` (a store a reshard has begun: its lock
    file or array folders, no index) or None (not a local store)."""
    text = os.fspath(path)
    if os.path.isfile(os.path.join(text, STORE_INDEX_NAME)):
        return FINISHED
    if any(os.path.lexists(os.path.join(text, name)) for name in (STORE_LOCK_NAME, "language_model", "transformer")):
        return UNFINISHED
    return None


def read_index(dst: str | os.PathLike[str], *, ctx: Any = None, any_version: bool = False) -> dict[str, Any] | None:
    """The store index of ``dst`` (``grokweights.json``), checked, or None when absent (not a finished store).

    Raises:
        StoreError: not JSON, not an index, of another store format version (unless ``any_version``), edited
            since reshard wrote it (its ``digest``), or inconsistent with its own plan.
    """
    where = f"{os.fspath(dst).rstrip('/')}/{STORE_INDEX_NAME}"
    raw = read_key(kvstore_spec(dst), STORE_INDEX_NAME, ctx=ctx)
    if raw is None:
        return None
    try:
        index = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"{where}: not valid JSON ({str(exc)[:100]}); rerun `grokweights reshard` into this "
                         "store to rewrite it", path=where) from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise StoreError(f"{where}: not a grokweights store index; delete it and rerun `grokweights reshard`",
                         path=where, expected=INDEX_FORMAT)
    version = index.get("version")
    if version != FORMAT_VERSION and not any_version:
        older = isinstance(version, int) and version < FORMAT_VERSION
        fix = "rerun `grokweights reshard SRC DST` to convert it" if older else "upgrade grokweights to read it"
        raise StoreError(f"{where}: store format version {str(version)[:20]}, but this grokweights reads version "
                         f"{FORMAT_VERSION}; {fix}", path=where, expected=FORMAT_VERSION, actual=version)
    if version == FORMAT_VERSION:
        _check_index(index, where)
    return index


def _check_index(index: dict[str, Any], where: str) -> None:
    """Fields present and typed, the self-digest intact, the copies of mesh/rules/config equal to the plan's."""
    for name, kind in _FIELDS.items():
        if not isinstance(index.get(name), kind):
            raise StoreError(f"{where}: the index lacks {name!r} (or it is not a JSON {kind.__name__}); the store is "
                             "damaged: rerun `grokweights reshard` into it", path=where, expected=name)
    if index.get("digest") != index_digest(index):
        raise StoreError(f"{where}: the index was edited after reshard wrote it (its digest does not match); rerun "
                         "`grokweights reshard` into this store to rewrite it", path=where)
    plan = index["plan"]
    for name in ("mesh", "rules", "config"):
        if index[name] != plan.get(name):
            raise StoreError(f"{where}: the index's {name} differs from its plan's; rerun `grokweights reshard` into "
                             "this store to rewrite it", path=where, expected=plan.get(name), actual=index[name])


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
            self._check_binding(array)
            spec = zarr3_spec(self.kvstore, array.store_path, shape=array.shape, dtype=array.dtype,
                              chunk_shape=array.chunk_shape, codec=array.codec)
            self._open[store_path] = open_array(spec, mode="open", ctx=self._ctx)
        return self._open[store_path]

    def _check_binding(self, array: ArrayPlan) -> None:
        """The array's ``zarr.json`` is the one the index recorded for this path (its sha256), and its record
        names this path, this plan entry and this data digest."""
        path = array.store_path
        raw = read_key(self.kvstore, f"{path}/zarr.json", ctx=self._ctx)
        where = f"{self.location.rstrip('/')}/{path}"
        fix = "rerun `grokweights reshard` into this store to rewrite it"
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

    def _array(self, store_path: str) -> ArrayPlan:
        try:
            return self.plan.array(store_path)
        except KeyError:
            raise StoreError(f"{self.location}: no array {store_path!r} in the store", path=self.location,
                             actual=store_path) from None

    def read(self, store_path: str, region: tuple[slice, ...] = ()) -> np.ndarray:
        """Read ``region`` of an array (numpy); a missing or corrupt chunk raises a one-line StoreError."""
        handle = self[store_path]
        try:
            return np.asarray(handle[region].read().result())
        except ValueError as exc:
            raise read_error(exc, self.location, store_path) from None

    def sha256(self, store_path: str) -> str:
        """The sha256 of an array's logical data (C order), read back row by row."""
        array, digest = self._array(store_path), hashlib.sha256()
        step = array.chunk_shape[0]
        for r0 in range(0, array.shape[0], step):
            digest.update(np.ascontiguousarray(self.read(store_path, (slice(r0, r0 + step),))).view(np.uint8))
        return digest.hexdigest()

    def __repr__(self) -> str:
        return f"Store({self.location!r}, mesh={self.mesh}, rules={self.rules.name}, arrays={len(self.plan.arrays)})"


