"""Reshard an official checkpoint into a zarr3 store laid out for a mesh: plan, check, write, index.

Store layout (one zarr3 array per parameter; quantized weights as an int8 ``weight`` plus float32
``scales``, the release's bfloat16 values exactly; the index is written last)::

    DST/
        grokweights.json                                   store index: format version, model config,
                                                           mesh, rules, plan, sha256 per array, source
        language_model/in_out_embed/embeddings/zarr.json   float32 array
        language_model/in_out_embed/embeddings/c/0/0 ...   chunks (each inside one device's shard)
        transformer/decoder_layer_0/moe/linear/w/weight/   int8 zarr3 array
        transformer/decoder_layer_0/moe/linear/w/scales/   float32 zarr3 array (re-blocked scales)
        ...

Steps: the plan (:func:`grokweights.sharding.plan.plan_reshard`, pure) -> every source header checked
against the layout, problems reported together -> the source verified against its manifest -> free space
for the arrays still to write -> each array written by :class:`.writer.ArrayWriter` (chunks, then its
``zarr.json``) -> the index, once every array is published. The writes hold the store's writer lock. A
rerun skips arrays whose ``zarr.json`` matches the plan and the source and whose recorded chunks are all
there, and redoes the others from scratch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._space import require_space
from ..checkpoint.config import ModelConfig, preset
from ..checkpoint.layout import TensorSpec, layer_indices, layout
from ..checkpoint.paths import resolve_checkpoint_dir
from ..checkpoint.shards import read_header
from ..constants import CKPT_DIRNAME
from ..errors import ConfigError, GrokWeightsError, StoreError, UsageError
from ..sharding.mesh import MeshSpec, RuleSet, as_mesh_spec, load_rules
from ..sharding.plan import DEFAULT_CHUNK_BYTES, ReshardPlan, plan_reshard
from .index import store_state
from .specs import kvstore_spec, local_path
from .write import StoreWrite
from .writer import source_identity

__all__ = ["reshard", "ReshardReport", "plan_for_checkpoint", "manifest_identity", "source_sha256"]

logger = logging.getLogger(__name__)


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



def _resolve_manifest(ckpt: str, manifest: Any) -> Any:
    from ..checkpoint.manifest import Manifest, find_local_manifest, load_manifest

    if manifest is None:
        return find_local_manifest(ckpt)
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)


def _resolve_config(manifest: Any, config: ModelConfig | str | None, src: str) -> ModelConfig:
    from ..checkpoint.inspection import checkpoint_config

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
    from ..checkpoint.verify import require_verified

    return require_verified(ckpt, manifest, [f"{CKPT_DIRNAME}/{s.file}" for s in specs], jobs=jobs, progress=progress)


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


def manifest_identity(manifest: Any) -> dict[str, Any] | None:
    if manifest is None:
        return None
    text = manifest.to_json()
    return {"name": manifest.name, "origin": manifest.origin, "infohash_v1": manifest.sources.infohash_v1,
            "sha256": hashlib.sha256(text.encode()).hexdigest()}


def source_sha256(manifest: Any, file: str) -> str | None:
    if manifest is None:
        return None
    try:
        return manifest.shard(f"{CKPT_DIRNAME}/{file}").sha256
    except GrokWeightsError:
        return None


def plan_for_checkpoint(src: str | os.PathLike[str], mesh: MeshSpec | str, *, rules: RuleSet | str = "grok1",
                        dtype: str = "keep", compression: str = "none", layers: str | Iterable[int] | None = None,
                        manifest: Any = None, config: ModelConfig | str | None = None,
                        chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[str, Any, ReshardPlan]:
    """``(ckpt-0 folder, manifest or None, plan)`` for resharding the checkpoint at ``src``; no data read."""
    ckpt = os.fspath(resolve_checkpoint_dir(src))
    manifest = _resolve_manifest(ckpt, manifest)
    config = _resolve_config(manifest, config, os.fspath(src))
    if layers is not None:
        layers = layer_indices(layers, num_layers=config.num_layers)
    plan = plan_reshard(layout(config), as_mesh_spec(mesh), load_rules(rules), config=config, dtype=dtype,
                        compression=compression, layers=layers, chunk_bytes=chunk_bytes)
    return ckpt, manifest, plan


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
    start = time.perf_counter()
    _check_destination(src, dst)
    report_progress = progress or (lambda n: None)
    ckpt, manifest, plan = plan_for_checkpoint(src, mesh, rules=rules, dtype=dtype, compression=compression,
                                               layers=layers, manifest=manifest, config=config,
                                               chunk_bytes=chunk_bytes)
    if dry_run:
        return ReshardReport(plan, os.fspath(dst), dry_run=True)
    specs = {s.file: s for s in layout(plan.config)}
    selected = [specs[f] for f in dict.fromkeys(a.source_file for a in plan.arrays)]
    _check_sources(ckpt, selected)
    verified = _verify_source(ckpt, manifest, selected, jobs, progress=report_progress) if verify else None
    written, digests = _write_store(plan, ckpt, dst, manifest, jobs=jobs, sync=sync, progress=report_progress)
    return ReshardReport(plan, os.fspath(dst), written=tuple(written),
                         skipped=tuple(p for p in digests if p not in written),
                         bytes_written=sum(plan.array(p).nbytes for p in written),
                         seconds=time.perf_counter() - start, verified=verified)


def _check_destination(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Refuse an empty destination (it would be the current folder), a file, and a folder inside the source."""
    text = os.fspath(dst)
    if not text.strip():
        raise UsageError("reshard: the destination is empty (it would write into the current folder); name a folder "
                         "for the store, e.g. grok-1-store", expected="a folder", actual=text)
    local = local_path(kvstore_spec(dst))
    if local is None:
        return
    local = local.rstrip("/") or "/"
    if os.path.lexists(local) and not os.path.isdir(local):
        raise UsageError(f"{text}: exists and is not a folder; choose a folder (new or a store) for the store",
                         path=local, expected="a folder")
    real = os.path.realpath(local)
    ckpt = os.path.realpath(resolve_checkpoint_dir(src))
    # the store may sit beside ckpt-0 (in a folder of its own), never in it nor in the folder that holds it
    if real in (ckpt, os.path.realpath(os.fspath(src)), os.path.dirname(ckpt)) or real.startswith(ckpt + os.sep):
        raise UsageError(f"{text}: inside the source checkpoint {os.fspath(src)}; choose a destination outside "
                         "it (the store would mix with the shards)", path=local, expected="outside the source")
    if os.path.isdir(local) and store_state(local) is None and _has_entries(local):
        raise UsageError(f"{text}: a folder that holds other files and is not a grokweights store; choose a new "
                         "folder (or an existing store) for the store", path=local,
                         expected="a new folder or a store", actual="a non-empty folder")


def _has_entries(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return any(True for _ in entries)


def _write_store(plan: ReshardPlan, ckpt: str, dst: str | os.PathLike[str], manifest: Any, *, jobs: int | None,
                 sync: bool, progress: Callable[[int], None]) -> tuple[list[str], dict[str, str]]:
    """Write every array not already complete, then the index; ``(store paths written, every sha256)``.

    The whole write goes through one :class:`.write.StoreWrite` (lock, completed arrays, index last)."""
    sources = {f: source_identity(f, ckpt, source_sha256(manifest, f))
               for f in dict.fromkeys(a.source_file for a in plan.arrays)}
    with StoreWrite(dst, jobs=jobs, sync=sync, progress=progress) as write:
        write.begin(plan, sources=sources, manifest=manifest_identity(manifest))
        todo = write.todo
        if write.local is not None:
            require_space(write.local, write.bytes_to_write(), what="to write into the store")
        for array in plan.arrays:
            if write.digests[array.store_path] is not None:
                progress(array.nbytes)
                continue
            write.write(array, ckpt)
        digests = write.finish()
    return [a.store_path for a in todo], digests
