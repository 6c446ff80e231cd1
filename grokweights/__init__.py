"""grokweights: fetch, verify, reshard and smoke-test the Grok-1 open weights.

The public API, over one package per stage (see ``docs/architecture.md``): :mod:`.checkpoint` (the
official format, numpy only), :mod:`.torrent` (libtorrent), :mod:`.sharding` (pure plans), :mod:`.store`
(tensorstore), :mod:`.model` (jax), :mod:`.runtime` (load and smoke). Every name is imported on its first
use, so ``import grokweights`` (and ``grokweights --help``) costs almost nothing.
"""

from __future__ import annotations

from ._lazy import lazy_names
from .errors import (
    ConfigError,
    GrokWeightsError,
    InsufficientSpaceError,
    LayoutMismatchError,
    ManifestError,
    MeshError,
    ShardFormatError,
    SmokeError,
    StoreError,
    TorrentError,
    UnsafePickleError,
    UsageError,
    VerificationError,
)

__version__ = "0.1.0"

#: public name -> module that defines it, imported lazily (heavy dependencies live there).
_LAZY = {
    "ModelConfig": "checkpoint.config", "PRESETS": "checkpoint.config", "preset": "checkpoint.config",
    "TensorSpec": "checkpoint.layout", "layout": "checkpoint.layout",
    "LazyArray": "checkpoint.shards", "QuantizedWeight8bit": "checkpoint.shards", "read_header": "checkpoint.shards",
    "read_shard": "checkpoint.shards", "write_checkpoint": "checkpoint.shards", "write_shard": "checkpoint.shards",
    "Manifest": "checkpoint.manifest", "ShardEntry": "checkpoint.manifest", "load_manifest": "checkpoint.manifest",
    "create_manifest": "checkpoint.manifest_ops", "pin_manifest": "checkpoint.manifest_ops",
    "pin_from_torrent": "checkpoint.manifest_ops", "pin_from_hub": "checkpoint.manifest_ops",
    "verify": "checkpoint.verify", "VerifyReport": "checkpoint.verify",
    "synthesize": "checkpoint.synth",
    "inspect_checkpoint": "checkpoint.inspection",
    "fetch": "torrent", "FetchReport": "torrent", "create_torrent": "torrent", "seed": "torrent",
    "Seeder": "torrent",
    "MeshSpec": "sharding.mesh", "plan_reshard": "sharding.plan", "ReshardPlan": "sharding.plan",
    "reshard": "store.reshard",
    "fetch_and_reshard": "stream", "StreamReport": "stream",
    "load": "runtime.load", "open": "runtime.load", "Params": "runtime.load",  # `open` is kept out of __all__
    "forward": "model.transformer",
    "smoke": "runtime.smoke",
    "export": "engines", "ExportReport": "engines",
}

__all__ = [
    "GrokWeightsError", "UsageError", "ConfigError", "ShardFormatError", "UnsafePickleError",
    "LayoutMismatchError", "ManifestError", "VerificationError", "InsufficientSpaceError", "TorrentError",
    "MeshError", "StoreError", "SmokeError", *(name for name in _LAZY if name != "open"),
]

__getattr__ = lazy_names(__name__, _LAZY)
