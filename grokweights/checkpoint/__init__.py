"""The official checkpoint format, in numpy alone: config, layout, shards, manifests, verification.

Nothing here imports jax, tensorstore or libtorrent, so ``inspect`` and ``verify`` start fast and run where
those are absent. Modules: :mod:`.config` (ModelConfig, presets), :mod:`.dtypes` (the dtype table),
:mod:`.layout` (the ordered tensors of a checkpoint), :mod:`.pickle_desc` / :mod:`.pickle_encode` /
:mod:`.pickle_parse` (the release's pickle stream), :mod:`.shards` (read and write shard files),
:mod:`.quant` (int8 x block scales), :mod:`.synth` (synthetic checkpoints), :mod:`.paths`,
:mod:`.hashing`, :mod:`.manifest` / :mod:`.manifest_ops`, :mod:`.inspection`, :mod:`.verify`.
"""

from __future__ import annotations

from .._lazy import lazy_names

#: public name -> module defining it, imported on first use (so ``import grokweights`` costs almost nothing and
#: ``grokweights --help`` does not import numpy). ``verify`` is the module here; the function is
#: ``grokweights.verify`` (or ``grokweights.checkpoint.verify.verify``).
_NAMES = {
    "ModelConfig": "config", "PRESETS": "config", "preset": "config",
    "InspectReport": "inspection", "checkpoint_config": "inspection", "infer_config": "inspection",
    "inspect_checkpoint": "inspection",
    "TensorSpec": "layout", "layer_indices": "layout", "layout": "layout",
    "Manifest": "manifest", "ShardEntry": "manifest", "Sources": "manifest", "find_local_manifest": "manifest",
    "load_manifest": "manifest", "create_manifest": "manifest_ops", "pin_manifest": "manifest_ops",
    "resolve_checkpoint_dir": "paths", "dequantize": "quant",
    "LazyArray": "shards", "QuantizedWeight8bit": "shards", "read_header": "shards", "read_shard": "shards",
    "write_checkpoint": "shards", "write_shard": "shards", "synthesize": "synth",
    "ShardResult": "verify", "VerifyReport": "verify",
}

__all__ = list(_NAMES)

__getattr__ = lazy_names(__name__, _NAMES)
