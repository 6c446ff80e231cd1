"""Load parameters onto a JAX mesh, reading only what this process's devices need.

``load(path, mesh)`` returns the haiku-style nested dict (``params[module_path][param]``) of
``jax.Array`` leaves, each with a ``NamedSharding`` on ``mesh``; quantized weights are
:class:`grokweights.model.params.QuantizedWeight` (int8 ``weight`` + block ``scales``). Every leaf is built
with ``jax.make_array_from_callback``: for the devices this process can address, the regions they hold
are read concurrently (tensorstore futures), each distinct region once per process. Under
``jax.distributed`` each process therefore reads only its own devices' slices.

``path`` is a store made by :func:`grokweights.store.reshard` (fast: each device's shard is whole
chunks), or an official checkpoint folder read through the safe memory-mapped reader (slower: every
region is gathered from the row-major source file, and the release's scales are re-blocked on the fly).

Any mesh and rules are served correctly: when they differ from the store's, each device reads the
region it needs (possibly touching more chunks than a matching store would) and scales are re-blocked
so that a device's scales cover exactly its rows.
"""

from __future__ import annotations

import collections
import math
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoint.config import ModelConfig
from ..checkpoint.dtypes import numpy_dtype
from ..checkpoint.layout import layer_indices, layer_of, layout
from ..checkpoint.quant import dequantize_rows, expand_scales
from ..checkpoint.shards import drop_pages
from ..errors import StoreError
from ..sharding.mesh import GROK1_RULES, MeshSpec, RuleSet, as_mesh_spec, default_mesh, load_rules, shard_factors
from ..sharding.plan import ArrayPlan, stored_scale_blocks
from ..store import Store
from .devices import jax_mesh, mesh_spec_of
from .hostmem import HostBuffers, staging_for
from .sources import STORE, source_kind

__all__ = ["load", "open", "Params", "Store", "LoadStats"]

Params = dict[str, dict[str, Any]]
Region = tuple[tuple[int, int], ...]
#: requested bytes held in host memory before the leaves that need them are built
_WINDOW_BYTES = 1 << 30


@dataclass
class LoadStats:
    """Filled in by :func:`load`: what this process read."""

    bytes_read: int = 0
    regions: int = 0
    leaves: int = 0
    seconds: float = 0.0
    source: str = ""
    #: staging buffers (accelerators): allocated, and reused for later leaves
    staging_allocated: int = 0
    staging_reused: int = 0


@dataclass(frozen=True)
class _Stored:
    """One source array: how to read a region of it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[Region], Any]  # -> object with .result() -> np.ndarray
    release: Callable[[], None] | None = None  # called once every leaf reading it is built


@dataclass(frozen=True)
class _Param:
    key: str
    kind: str  # "array" | "quantized"
    parts: dict[str, _Stored] = field(default_factory=dict)  # "array" or "weight" + "scales"
    dequantized: bool = False  # a plain array stored from a quantized weight (``--dtype bfloat16``)


# --------------------------------------------------------------------------------------------- stores


def open(path: str | os.PathLike[str]) -> Store:  # noqa: A001 - the public name is grokweights.open
    """Open a resharded store for inspection (lazy per-array handles)."""
    return Store(path)


def _store_params(store: Store, wanted: set[int] | None, stats: LoadStats, buffers: HostBuffers) -> list[_Param]:
    def reader(array: ArrayPlan) -> _Stored:
        dtype = numpy_dtype(array.dtype)
        store.record(array.store_path)  # the array's binding to the index, checked before any read

        def read(region: Region) -> Any:
            stats.bytes_read += math.prod(b - a for a, b in region) * dtype.itemsize
            return store.read_into(array.store_path, region, buffers.take(tuple(b - a for a, b in region), dtype))

        return _Stored(array.shape, dtype, read)

    params: dict[str, _Param] = {}
    for array in store.plan.arrays:
        layer = layer_of(array.key)
        if wanted is not None and layer is not None and layer not in wanted:
            continue
        kind = "array" if array.role == "array" else "quantized"
        param = params.setdefault(array.key, _Param(array.key, kind, dequantized=array.source_kind != kind))
        param.parts[array.role] = reader(array)
    return list(params.values())


# ---------------------------------------------------------------------------------------- checkpoints


def _checkpoint_params(ckpt: str, config: ModelConfig, wanted: set[int] | None, stats: LoadStats,
                       pool: ThreadPoolExecutor, buffers: HostBuffers) -> list[_Param]:
    from ..checkpoint.shards import read_shard

    def reader(array: np.ndarray) -> _Stored:
        def copy(region: Region, out: np.ndarray) -> np.ndarray:
            np.copyto(out, array[tuple(slice(a, b) for a, b in region)])
            return out

        def read(region: Region) -> Future:
            stats.bytes_read += math.prod(b - a for a, b in region) * array.dtype.itemsize
            # the buffer is taken here, in the leaf's order (a staging buffer belongs to the leaf that asked)
            return pool.submit(copy, region, buffers.take(tuple(b - a for a, b in region), array.dtype))

        return _Stored(tuple(array.shape), array.dtype, read, release=lambda: drop_pages(array))

    out = []
    for spec in layout(config):
        if wanted is not None and spec.layer is not None and spec.layer not in wanted:
            continue
        value = read_shard(os.path.join(ckpt, spec.file))
        if spec.kind == "quantized":
            out.append(_Param(spec.key, "quantized", {"weight": reader(value.weight), "scales": reader(value.scales)}))
        else:
            out.append(_Param(spec.key, "array", {"array": reader(value)}))
    return out


# ------------------------------------------------------------------------------------------- leaves


def _np_dtype(dtype: Any) -> np.dtype | None:
    return None if dtype is None else numpy_dtype(dtype)


def _direct(part: _Stored, cast: np.dtype | None = None) -> Callable[[Region], Callable[[], np.ndarray]]:
    def start(region: Region) -> Callable[[], np.ndarray]:
        future = part.read(region)
        return lambda: np.asarray(future.result()) if cast is None else np.asarray(future.result()).astype(cast)

    return start


def _scales(weight: _Stored, scales: _Stored, split: int) -> tuple[tuple[int, ...], Callable]:
    """Scales re-blocked so that each of ``split`` input-axis shards holds whole blocks of its own rows."""
    rows, nb = weight.shape[-2], scales.shape[-2]
    blocks = stored_scale_blocks(rows, nb, split)
    rep = blocks // nb

    def start(region: Region) -> Callable[[], np.ndarray]:
        (b0, b1) = region[-2]
        s0, s1 = b0 // rep, -(-b1 // rep)
        future = scales.read(region[:-2] + ((s0, s1),) + region[-1:])
        return lambda: expand_scales(np.asarray(future.result()), (s1 - s0) * rep)[..., b0 - s0 * rep:b1 - s0 * rep, :]

    return (*scales.shape[:-2], blocks, scales.shape[-1]), start


def _dequantized(weight: _Stored, scales: _Stored, dtype: np.dtype) -> Callable:
    block = weight.shape[-2] // scales.shape[-2]

    def start(region: Region) -> Callable[[], np.ndarray]:
        (i0, i1) = region[-2]
        s0, s1 = i0 // block, -(-i1 // block)
        fw = weight.read(region)
        fs = scales.read(region[:-2] + ((s0, s1),) + region[-1:])

        def finish() -> np.ndarray:
            return dequantize_rows(np.asarray(fw.result()), np.asarray(fs.result()), block=block, first_row=i0,
                                   first_block=s0, dtype=dtype)

        return finish

    return start


def _leaves(param: _Param, factors: tuple[int, ...], dtype: np.dtype | None) -> list[tuple[str, tuple, Callable]]:
    """``(field, global shape, start(region) -> finish())`` for each leaf of ``param``."""
    if param.kind == "array":
        part = param.parts["array"]
        return [("array", part.shape, _direct(part, dtype if param.dequantized else None))]
    weight, scales = param.parts["weight"], param.parts["scales"]
    if dtype is not None:
        return [("array", weight.shape, _dequantized(weight, scales, dtype))]
    shape, start = _scales(weight, scales, factors[-2])
    return [("weight", weight.shape, _direct(weight)), ("scales", shape, start)]


def _region(index: tuple[slice, ...], shape: tuple[int, ...]) -> Region:
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    return tuple(s.indices(n)[:2] for s, n in zip(index, shape, strict=True))


def _build(shape: tuple[int, ...], sharding: Any, thunks: dict[Region, Callable], buffers: HostBuffers) -> Any:
    """One leaf from the regions its addressable devices hold (each region finished once)."""
    import jax

    done: dict[Region, np.ndarray] = {}

    def fetch(index: tuple[slice, ...]) -> np.ndarray:
        region = _region(index, shape)
        if region not in done:
            done[region] = thunks[region]()
        return buffers.handed(done[region])

    return jax.make_array_from_callback(shape, sharding, fetch)


# --------------------------------------------------------------------------------------------- load


def load(path: str | os.PathLike[str] | Store, mesh: Any = None, *, rules: RuleSet | str | None = None,
         layers: str | Iterable[int] | None = None, dtype: Any = None, config: ModelConfig | str | None = None,
         jobs: int | None = None, stats: LoadStats | None = None, devices: Any = None,
         axis_types: str = "auto") -> Params:
    """Load a store (or an official checkpoint folder) as sharded ``jax.Array`` leaves.

    Args:
        path: a store location (local path or tensorstore URL), an opened :class:`Store`, or a folder holding
            ``ckpt-0/``.
        mesh: a ``jax.sharding.Mesh`` (Auto or Explicit axes), a :class:`MeshSpec` or its text; default: the
            store's mesh (for a checkpoint folder, ``data=1,model=<device count>``).
        rules: partition rules (name, file or :class:`RuleSet`); default: the store's (``grok1`` for a
            checkpoint folder).
        layers: decoder layers to load (``"0-3"`` or indices); default: all there are.
        dtype: dequantise quantized weights to this dtype (e.g. ``jnp.bfloat16``) instead of returning
            ``QuantizedWeight``; plain float32 arrays are left as they are.
        config: model config of a checkpoint folder without a manifest beside it (else inferred).
        jobs: reader threads for a checkpoint folder.
        stats: a :class:`LoadStats` to fill in (bytes read by this process, regions, seconds).
        devices: for a mesh given as a :class:`MeshSpec` or text, the devices to lay it over (default: every
            device of the default backend, which must number the mesh's size).
        axis_types: for such a mesh, ``auto`` or ``explicit`` axes (see :func:`.devices.jax_mesh`).

    Returns:
        ``params[module_path][param]``: ``jax.Array`` or :class:`~grokweights.model.params.QuantizedWeight`.

    Raises:
        MeshError: the mesh does not fit the devices, or does not divide a dimension the rules split.
        StoreError: the store is missing, unfinished or lacks a requested layer.
    """
    import jax

    started, stats = time.perf_counter(), stats if stats is not None else LoadStats()
    source = _open_source(path, config, stats)
    store = source if isinstance(source, Store) else None
    if mesh is None:
        mesh = store.mesh if store is not None else default_mesh(len(devices) if devices else jax.device_count())
    jmesh = jax_mesh(mesh, devices=devices, axis_types=axis_types)
    spec = mesh_spec_of(jmesh) if isinstance(mesh, jax.sharding.Mesh) else as_mesh_spec(mesh)
    rule_set = load_rules(rules) if rules is not None else (store.rules if store is not None else GROK1_RULES)
    platform = jmesh.devices.flat[0].platform
    buffers = HostBuffers(staging=staging_for(platform), copy_out=platform == "cpu")
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        if store is not None:
            params = _store_params(store, _wanted(layers, store.config, store.plan.layers), stats, buffers)
        else:
            ckpt, cfg = source
            params = _checkpoint_params(ckpt, cfg, _wanted(layers, cfg, None), stats, pool, buffers)
        out = _load_params(params, jmesh, spec, rule_set, _np_dtype(dtype), stats, buffers)
    stats.leaves, stats.seconds = sum(len(x) for x in out), time.perf_counter() - started
    stats.staging_allocated, stats.staging_reused = buffers.allocated, buffers.reused
    return _tree(params, out)


def _open_source(path: str | os.PathLike[str] | Store, config: ModelConfig | str | None,
                 stats: LoadStats) -> Store | tuple[str, ModelConfig]:
    """The store (opened once per load), or a checkpoint folder's ``ckpt-0`` and config."""
    if isinstance(path, Store):
        stats.source = "store"
        return path
    text = os.fspath(path)
    if source_kind(text) == STORE:
        stats.source = "store"
        return Store(text)
    from ..checkpoint.inspection import checkpoint_config
    from ..checkpoint.paths import resolve_checkpoint_dir

    ckpt = os.fspath(resolve_checkpoint_dir(text))
    stats.source = "ckpt-0"
    return ckpt, checkpoint_config(ckpt, config)


def _tree(params: list[_Param], leaves: list[dict[str, Any]]) -> Params:
    """The haiku-style nested dict of the built leaves."""
    from ..model.params import QuantizedWeight

    result: Params = {}
    for param, built in zip(params, leaves, strict=True):
        module, name = param.key.rsplit("/", 1)
        value = QuantizedWeight(built["weight"], built["scales"]) if "weight" in built else built["array"]
        result.setdefault(module, {})[name] = value
    return result


def _wanted(layers: Any, cfg: ModelConfig, present: tuple[int, ...] | None) -> set[int] | None:
    if layers is None:
        return None
    wanted = set(layer_indices(layers, num_layers=cfg.num_layers))
    missing = sorted(wanted - set(present)) if present is not None else []
    if missing:
        raise StoreError(f"layers {missing} are not in the store (it holds layers {list(present)}); reshard them",
                         expected=list(present), actual=missing)
    return wanted


def _load_params(params: list[_Param], jmesh: Any, mspec: MeshSpec, rules: RuleSet, dtype: np.dtype | None,
                 stats: LoadStats, buffers: HostBuffers) -> list[dict[str, Any]]:
    import jax

    out: list[dict[str, Any]] = [{} for _ in params]
    pending: collections.deque = collections.deque()  # leaves whose reads are in flight, oldest first
    in_flight = 0
    left = {slot: 0 for slot in range(len(params))}

    def build(entry: tuple) -> None:
        slot, name, shape, sharding, thunks, staged, _ = entry
        out[slot][name] = _build(shape, sharding, thunks, buffers)
        if staged:  # the leaf is on its devices: its staging buffers serve the next leaves
            out[slot][name].block_until_ready()
            buffers.give(staged)
        left[slot] -= 1
        if not left[slot]:  # the source pages of a checkpoint shard are no longer needed by this process
            for part in params[slot].parts.values():
                if part.release is not None:
                    part.release()

    for slot, param in enumerate(params):
        pspec = rules.spec_for(param.key)
        shape0 = param.parts.get("weight", next(iter(param.parts.values()))).shape
        factors = shard_factors(param.key, shape0, pspec, mspec)
        sharding = jax.sharding.NamedSharding(jmesh, jax.sharding.PartitionSpec(*pspec))
        for name, shape, start in _leaves(param, factors, dtype):
            regions = {_region(idx, shape) for idx in sharding.addressable_devices_indices_map(shape).values()}
            before = stats.bytes_read
            thunks = {r: start(r) for r in regions}
            stats.regions += len(regions)
            in_flight += stats.bytes_read - before
            pending.append((slot, name, shape, sharding, thunks, buffers.drain(), stats.bytes_read - before))
            left[slot] += 1
        while in_flight > _WINDOW_BYTES and len(pending) > 1:  # keep reads queued while building the oldest
            in_flight -= pending[0][-1]
            build(pending.popleft())
    while pending:
        build(pending.popleft())
    return out
