"""grokweights: fetch, verify, reshard and smoke-test the Grok-1 open weights.

The format core (config, layout, shards, manifest, verify) imports neither jax nor tensorstore nor
libtorrent; the stages that need them are imported on first use of their names here.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .config import PRESETS, ModelConfig, preset
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
from .layout import TensorSpec, layout
from .shards import LazyArray, QuantizedWeight8bit, read_header, read_shard, write_checkpoint, write_shard

__version__ = "0.1.0"

#: public name -> module that defines it, imported lazily (heavy dependencies live there).
_LAZY = {
    "Manifest": "manifest", "ShardEntry": "manifest", "load_manifest": "manifest",
    "create_manifest": "manifest_ops", "pin_manifest": "manifest_ops",
    "verify": "verify", "VerifyReport": "verify",
    "synthesize": "synth",
    "inspect_checkpoint": "inspection",
    "fetch": "torrent", "FetchReport": "torrent", "create_torrent": "torrent", "seed": "torrent",
    "Seeder": "torrent",
    "MeshSpec": "mesh", "plan_reshard": "plan", "ReshardPlan": "plan", "reshard": "store",
    "load": "load", "open": "load", "Params": "load",  # `open` is grokweights.open, kept out of __all__
    "forward": "model",
    "smoke": "smoke",
}

__all__ = [
    "ModelConfig", "PRESETS", "preset", "TensorSpec", "layout", "QuantizedWeight8bit", "LazyArray",
    "read_header", "read_shard", "write_shard", "write_checkpoint",
    "GrokWeightsError", "UsageError", "ConfigError", "ShardFormatError", "UnsafePickleError",
    "LayoutMismatchError", "ManifestError", "VerificationError", "InsufficientSpaceError", "TorrentError",
    "MeshError", "StoreError", "SmokeError", *(name for name in _LAZY if name != "open"),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grokweights' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """Keeps ``grokweights.verify``, ``.load``, ``.smoke`` the functions once their modules are imported.

    Importing a submodule binds it as an attribute of its package; for the public functions that share
    their module's name that would replace the function. The modules stay reachable in ``sys.modules``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
