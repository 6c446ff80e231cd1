"""Execute a reshard plan: stream an official checkpoint into zarr3 arrays laid out for a mesh.

Store layout (one zarr3 array per parameter; quantized weights as an int8 ``weight`` plus bfloat16
``scales``; the index is written last)::

    DST/
        grokweights.json                                   store index: format version, model config,
                                                           mesh, rules, plan, sha256 per array, source
        language_model/in_out_embed/embeddings/zarr.json   float32 array
        language_model/in_out_embed/embeddings/c/0/0 ...   chunks (each inside one device's shard)
        transformer/decoder_layer_0/moe/linear/w/weight/   int8 zarr3 array
        transformer/decoder_layer_0/moe/linear/w/scales/   bfloat16 zarr3 array (re-blocked scales)
        ...

Streaming: a source shard is memory-mapped (:func:`grokweights.shards.read_shard`) and written one row of
chunks at a time; at most two rows are in flight, and the pages of a finished row are dropped from the
process's mapping, so peak memory is bounded by the plan's row size, not by the tensor.

Atomic and resumable: an array's chunks are written without metadata and its ``zarr.json`` (carrying the
sha256 of its logical data, its plan entry and the source's identity) is written only once every chunk
is; the index is written after every array. A rerun skips arrays whose ``zarr.json`` matches the plan
and redoes the others from scratch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import logging
import mmap
import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from . import tensorstore_io as tsio
from .config import ModelConfig, preset
from .constants import CKPT_DIRNAME, STORE_INDEX_NAME
from .errors import ConfigError, GrokWeightsError, InsufficientSpaceError, StoreError, UsageError, VerificationError
from .layout import TensorSpec, layer_indices, layout
from .mesh import MeshSpec, RuleSet, load_rules
from .plan import DEFAULT_CHUNK_BYTES, ArrayPlan, ReshardPlan, plan_reshard
from .shards import dequantize_region, read_header, read_shard
from .tensorstore_io import INDEX_FORMAT, read_index

__all__ = ["reshard", "ReshardReport", "read_index", "expand_scales", "INDEX_FORMAT"]

logger = logging.getLogger(__name__)

_NP_DTYPES = {"float32": np.dtype("float32"), "int8": np.dtype("int8"), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
_PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class ReshardReport:
    """What a reshard did: the plan, and which arrays were written or found complete."""

    plan: ReshardPlan
    dst: str
    dry_run: bool = False
    written: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    bytes_written: int = 0
    seconds: float = 0.0
    verified: dict[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"dst": self.dst, "dry_run": self.dry_run, "written": list(self.written),
                "skipped": list(self.skipped), "bytes_written": self.bytes_written,
                "seconds": round(self.seconds, 3), "verified": self.verified, "plan": self.plan.to_dict()}


# -------------------------------------------------------------------------------------------- numerics


def expand_scales(scales: np.ndarray, blocks: int) -> np.ndarray:
    """Re-block ``scales`` (``nb`` row blocks on axis -2) to ``blocks`` rows, a multiple of ``nb``."""
    nb = scales.shape[-2]
    if blocks % nb:
        raise StoreError(f"cannot re-block {nb} scale blocks to {blocks}", expected=f"a multiple of {nb}",
                         actual=blocks)
    return np.repeat(scales, blocks // nb, axis=-2) if blocks != nb else np.asarray(scales)


# -------------------------------------------------------------------------------------- source access


def _mmap_of(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    return base


def drop_pages(view: np.ndarray | None) -> None:
    """Unmap the pages of ``view``, a contiguous view of a memory-mapped shard; the page cache keeps them."""
    mm = _mmap_of(view) if view is not None else None
    if mm is None or view.size == 0:
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


def _source_identity(spec: TensorSpec, ckpt: str, manifest: Any) -> dict[str, Any]:
    sha = None
    if manifest is not None:
        try:
            sha = manifest.shard(f"{CKPT_DIRNAME}/{spec.file}").sha256
        except GrokWeightsError:
            sha = None
    return {"file": spec.file, "size": os.path.getsize(os.path.join(ckpt, spec.file)), "sha256": sha}


# ------------------------------------------------------------------------------------------- writing


RowOf = Callable[[int, int, int], tuple[np.ndarray, "np.ndarray | None"]]


def _row_provider(array: ArrayPlan, source: Any) -> RowOf:
    """``row(r0, r1, slot) -> (data, source view)``: rows ``r0:r1`` of the stored array, and the memory-mapped
    source rows they were made from (whose pages are dropped once written), for one store array."""
    if array.role == "scales":
        data = expand_scales(np.asarray(source.scales), array.shape[-2])
        return lambda r0, r1, slot: (data[r0:r1], None)
    if array.source_kind == "quantized" and array.role == "array":
        weight, scales = source.weight, source.scales
        dtype = _NP_DTYPES[array.dtype]
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


def _write_array(array: ArrayPlan, source: Any, spec: dict[str, Any], ctx: Any, hasher: ThreadPoolExecutor,
                 progress: Callable[[int], None]) -> str:
    """Write every chunk of ``array`` (unpublished); returns the sha256 of its logical data.

    Rows of chunks are written by tensorstore's threads while ``hasher`` (one thread, so rows are hashed
    in order) digests them: hashing and writing overlap on separate cores.
    """
    store = tsio.open_array(spec, mode="unpublished", ctx=ctx)
    row_of = _row_provider(array, source)
    shape, chunk = array.shape, array.chunk_shape
    digest = hashlib.sha256()
    pending: list[tuple[list[Any], np.ndarray, np.ndarray | None]] = []

    def finish(entry: tuple[list[Any], np.ndarray, np.ndarray | None]) -> None:
        futures, data, consumed = entry
        for f in futures:
            f.result()
        drop_pages(consumed)
        progress(data.nbytes)

    for slot, r0 in enumerate(range(0, shape[0], chunk[0])):
        r1 = min(shape[0], r0 + chunk[0])
        if len(pending) == 2:
            finish(pending.pop(0))  # also frees the dequantisation buffer of this slot
        data, consumed = row_of(r0, r1, slot % 2)
        futures: list[Any] = [hasher.submit(digest.update, np.ascontiguousarray(data).reshape(-1).view(np.uint8))]
        for starts in itertools.product(*(range(0, n, c) for n, c in zip(shape[1:], chunk[1:], strict=True))):
            local = (slice(0, r1 - r0),) + tuple(slice(s, s + c) for s, c in zip(starts, chunk[1:], strict=True))
            futures.append(store[(slice(r0, r1),) + local[1:]].write(data[local]))
        pending.append((futures, data, consumed))
    for entry in pending:
        finish(entry)
    return digest.hexdigest()


def _publish(array: ArrayPlan, kv: dict[str, Any], ctx: Any, record: dict[str, Any]) -> None:
    spec = tsio.zarr3_spec(kv, array.store_path, shape=array.shape, dtype=array.dtype,
                           chunk_shape=array.chunk_shape, codec=array.codec, attributes={"grokweights": record})
    tsio.open_array(spec, mode="publish", ctx=ctx)


def _completed(array: ArrayPlan, kv: dict[str, Any], ctx: Any, source: dict[str, Any]) -> str | None:
    """The recorded sha256 when ``array`` is already complete and matches the plan; None otherwise."""
    raw = tsio.read_key(kv, f"{array.store_path}/zarr.json", ctx=ctx)
    if raw is None:
        return None
    try:
        record = json.loads(raw)["attributes"]["grokweights"]
    except (ValueError, KeyError, TypeError):
        return None
    if record.get("plan") == array.to_dict() and record.get("source") == source and record.get("sha256"):
        return record["sha256"]
    logger.info("%s: existing array does not match the plan; rewriting it", array.store_path)
    return None


# ------------------------------------------------------------------------------------------- reshard


def _resolve_manifest(ckpt: str, manifest: Any) -> Any:
    from .manifest import Manifest, find_local_manifest, load_manifest

    if manifest is None:
        return find_local_manifest(ckpt)
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def _resolve_config(manifest: Any, config: ModelConfig | str | None, src: str) -> ModelConfig:
    from .inspection import checkpoint_config

    if manifest is not None:
        if isinstance(config, str):
            config = preset(config)
        if config is not None and config != manifest.config:
            raise UsageError(f"the model config given disagrees with manifest {manifest.name!r}; drop one",
                             expected=manifest.config.to_dict(), actual=config.to_dict())
        return manifest.config
    try:
        return checkpoint_config(src, config)
    except ConfigError as exc:
        raise ConfigError(f"{src}: no manifest beside the checkpoint and {exc.message}", path=src) from None


def _verify_source(ckpt: str, manifest: Any, specs: list[TensorSpec], jobs: int | None, *,
                   progress: Callable[[int], None]) -> dict[str, Any]:
    from .verify import verify

    if manifest is None:
        raise VerificationError(f"{ckpt}: no manifest to verify against; pass --manifest FILE|NAME or --no-verify",
                                path=ckpt)
    report = verify(ckpt, manifest, jobs=jobs, only=[f"{CKPT_DIRNAME}/{s.file}" for s in specs], progress=progress)
    if not report.ok:
        bad = report.failures
        shown = "; ".join(f"{r.path}: {r.status}" + (f" (expected {r.expected}, got {r.actual})" if r.expected else "")
                          for r in bad[:3])
        raise VerificationError(f"{ckpt}: {len(bad)} shard(s) failed verification against manifest "
                                f"{manifest.name!r}: {shown}; re-run `grokweights fetch` to repair them, or pass "
                                "--no-verify", path=ckpt, actual=[r.path for r in bad])
    return {"manifest": manifest.name, "counts": report.counts()}


def _check_sources(ckpt: str, specs: list[TensorSpec]) -> None:
    """Every selected shard exists and its header matches the layout; all problems reported together."""
    problems = []
    for spec in specs:
        path = os.path.join(ckpt, spec.file)
        try:
            problems += [f"{path}: {p}" for p in spec.check(read_header(path).parsed)]
        except GrokWeightsError as exc:
            problems.append(str(exc))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise StoreError(f"{len(problems)} source shard problem(s): {'; '.join(problems[:5])}{more}", path=ckpt,
                         actual=problems)


def _manifest_identity(manifest: Any) -> dict[str, Any] | None:
    if manifest is None:
        return None
    text = manifest.to_json()
    return {"name": manifest.name, "origin": manifest.origin, "infohash_v1": manifest.sources.infohash_v1,
            "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _check_space(kv: dict[str, Any], needed: int) -> None:
    path = tsio.local_path(kv)
    if path is None:
        return
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise InsufficientSpaceError(f"{path}: {needed / 1e9:.2f} GB to write but {free / 1e9:.2f} GB free; free "
                                     "space or choose another destination", path=path, expected=needed, actual=free)


def _write_all(plan: ReshardPlan, ckpt: str, kv: dict[str, Any], ctx: Any, sources: dict[str, Any],
               done: dict[str, str | None], progress: Callable[[int], None], *,
               sync: bool) -> tuple[list[str], dict[str, str]]:
    """Write every array not ``done``; returns the store paths written and every array's sha256.

    An array is published (its ``zarr.json`` written) by a background thread once its chunks are durable,
    while the next array is being written.
    """
    written, digests, published = [], {}, []

    def publish(array: ArrayPlan, record: dict[str, Any]) -> None:
        if sync:
            tsio.make_durable(kv)
        _publish(array, kv, ctx, record)

    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher, \
            ThreadPoolExecutor(1, thread_name_prefix="publish") as publisher:
        for array in plan.arrays:
            if done[array.store_path] is not None:
                digests[array.store_path] = done[array.store_path]
                progress(array.nbytes)
                continue
            tsio.delete_prefix(kv, array.store_path, ctx=ctx)
            spec = tsio.zarr3_spec(kv, array.store_path, shape=array.shape, dtype=array.dtype,
                                   chunk_shape=array.chunk_shape, codec=array.codec)
            source = read_shard(os.path.join(ckpt, array.source_file))
            record = {"plan": array.to_dict(), "source": sources[array.source_file]}
            record["sha256"] = digests[array.store_path] = _write_array(array, source, spec, ctx, hasher, progress)
            published.append(publisher.submit(publish, array, record))
            written.append(array.store_path)
            logger.debug("wrote %s (%d bytes)", array.store_path, array.nbytes)
        for future in published:
            future.result()
    return written, digests


def reshard(src: str | os.PathLike[str], dst: str | os.PathLike[str], mesh: MeshSpec | str, *,
            rules: RuleSet | str = "grok1", dtype: str = "keep", compression: str = "none",
            jobs: int | None = None, layers: str | Iterable[int] | None = None, manifest: Any = None,
            verify: bool = True, config: ModelConfig | str | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
            dry_run: bool = False, sync: bool = True, progress: Callable[[int], None] | None = None) -> ReshardReport:
    """Reshard the official checkpoint ``src`` into a tensorstore store at ``dst`` laid out for ``mesh``.

    Args:
        src: the folder holding ``ckpt-0/`` (or ``ckpt-0/`` itself).
        dst: a local path or a tensorstore URL (``memory://``, ``gs://``, ``s3://``).
        mesh: a :class:`MeshSpec` or its text (``"data=1,model=8"``).
        rules: ``grok1``, ``expert``, a JSON rules file or a :class:`RuleSet`.
        dtype: ``keep`` (int8 weights + scales) or ``bfloat16`` (dequantised weights).
        compression: ``none`` or ``zstd[:LEVEL]``.
        jobs: concurrent chunk copies and file operations (default: the CPUs).
        layers: decoder layers to keep (``"0-7"`` or indices); the embedding and final norm are always kept.
        manifest: a Manifest, a manifest file or shipped name; default: the one beside the checkpoint.
        verify: verify the source against the manifest first.
        config: the model config (a ModelConfig or preset name) when there is no manifest.
        chunk_bytes: largest chunk.
        dry_run: plan only; write nothing.
        sync: make every array's chunks durable (``syncfs`` of a local store) before publishing it.
        progress: called with byte counts as data is verified and written.

    Returns:
        A :class:`ReshardReport`.
    """
    from .verify import resolve_checkpoint_dir

    start = time.perf_counter()
    report_progress = progress or (lambda n: None)
    ckpt = os.fspath(resolve_checkpoint_dir(src))
    manifest = _resolve_manifest(ckpt, manifest)
    config = _resolve_config(manifest, config, os.fspath(src))
    mesh = MeshSpec.parse(mesh) if isinstance(mesh, str) else mesh
    if layers is not None:
        layers = layer_indices(layers, num_layers=config.num_layers)
    plan = plan_reshard(layout(config), mesh, load_rules(rules), config=config, dtype=dtype,
                        compression=compression, layers=layers, chunk_bytes=chunk_bytes)
    if dry_run:
        return ReshardReport(plan, os.fspath(dst), dry_run=True)
    specs = {s.file: s for s in layout(config)}
    selected = [specs[f] for f in dict.fromkeys(a.source_file for a in plan.arrays)]
    _check_sources(ckpt, selected)
    verified = _verify_source(ckpt, manifest, selected, jobs, progress=report_progress) if verify else None
    kv = tsio.kvstore_spec(dst)
    ctx = tsio.context(jobs=jobs or os.cpu_count(), sync=False)  # durability: one syncfs per array
    existing = read_index(dst, ctx=ctx)
    if existing is not None and existing.get("plan") != plan.to_dict():
        raise StoreError(f"{dst}: already holds a store for another plan (mesh {existing.get('mesh')}, rules "
                         f"{existing.get('rules', {}).get('name')}); delete it or choose another destination",
                         path=os.fspath(dst))
    sources = {s.file: _source_identity(s, ckpt, manifest) for s in selected}
    done = {a.store_path: _completed(a, kv, ctx, sources[a.source_file]) for a in plan.arrays}
    _check_space(kv, sum(a.nbytes for a in plan.arrays if done[a.store_path] is None))
    written, digests = _write_all(plan, ckpt, kv, ctx, sources, done, report_progress, sync=sync)
    index = {
        "format": INDEX_FORMAT, "version": plan.version,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": config.to_dict(), "mesh": plan.mesh.to_dict(), "rules": plan.rules.to_dict(),
        "plan": plan.to_dict(), "sha256": digests, "source": {"manifest": _manifest_identity(manifest)},
    }
    tsio.write_key(kv, STORE_INDEX_NAME, json.dumps(index, indent=1).encode(), ctx=ctx)
    return ReshardReport(plan, os.fspath(dst), written=tuple(written),
                         skipped=tuple(p for p in digests if p not in written),
                         bytes_written=sum(plan.array(p).nbytes for p in written),
                         seconds=time.perf_counter() - start, verified=verified)
