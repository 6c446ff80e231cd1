"""The official checkpoint format, in numpy alone: config, layout, shards, manifests, verification.

Nothing here imports jax, tensorstore or libtorrent, so ``inspect`` and ``verify`` start fast and run where
those are absent. Modules: :mod:`.config` (ModelConfig, presets), :mod:`.dtypes` (the dtype table),
:mod:`.layout` (the ordered tensors of a checkpoint), :mod:`.pickle_desc` / :mod:`.pickle_encode` /
:mod:`.pickle_parse` (the release's pickle stream), :mod:`.shards` (read and write shard files),
:mod:`.quant` (int8 x block scales), :mod:`.synth` (synthetic checkpoints), :mod:`.paths`,
:mod:`.hashing`, :mod:`.manifest` / :mod:`.manifest_ops`, :mod:`.inspection`, :mod:`.verify`.
"""

from __future__ import annotations

from .config import PRESETS, ModelConfig, preset
from .inspection import InspectReport, checkpoint_config, infer_config, inspect_checkpoint
from .layout import TensorSpec, layer_indices, layout
from .manifest import Manifest, ShardEntry, Sources, find_local_manifest, load_manifest
from .manifest_ops import create_manifest, pin_manifest
from .paths import resolve_checkpoint_dir
from .quant import dequantize
from .shards import LazyArray, QuantizedWeight8bit, read_header, read_shard, write_checkpoint, write_shard
from .synth import synthesize
from .verify import ShardResult, VerifyReport, verify

__all__ = [
    "ModelConfig", "PRESETS", "preset", "TensorSpec", "layout", "layer_indices", "QuantizedWeight8bit",
    "LazyArray", "read_header", "read_shard", "write_shard", "write_checkpoint", "dequantize", "synthesize",
    "resolve_checkpoint_dir", "Manifest", "ShardEntry", "Sources", "load_manifest", "find_local_manifest",
    "create_manifest", "pin_manifest", "inspect_checkpoint", "InspectReport", "infer_config", "checkpoint_config",
    "verify", "VerifyReport", "ShardResult",
]
