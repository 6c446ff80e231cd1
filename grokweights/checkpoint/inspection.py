"""Inspect a checkpoint from its shard headers alone, and infer the model config its shapes determine.

Only headers are read (kilobytes per shard, whatever its size): kind, shapes, dtypes and payload
sizes. Every file is checked against the layout of the model config (given, recorded beside the
checkpoint, or inferred from the shapes): order, shapes, dtypes, missing and unexpected files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constants import shard_name
from ..errors import ConfigError, GrokWeightsError
from .config import PRESETS, ModelConfig, ffn_size, preset
from .layout import TensorSpec, layout
from .manifest import find_local_manifest
from .paths import resolve_checkpoint_dir, shard_files
from .shards import ShardHeader, read_header

__all__ = ["inspect_checkpoint", "InspectReport", "FileInfo", "infer_config", "checkpoint_config", "scan_headers",
           "UNDETERMINED_FIELDS"]

#: config fields that no shape determines.
UNDETERMINED_FIELDS = ("key_size", "num_q_heads", "num_kv_heads", "num_selected_experts",
                       "embedding_multiplier_scale", "output_multiplier_scale", "attn_output_multiplier")


@dataclass(frozen=True)
class FileInfo:
    """One file of the checkpoint: its header (if it parsed) and how it compares with the layout."""

    file: str
    size: int
    spec: TensorSpec | None
    header: ShardHeader | None
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "bytes": self.size, "problems": list(self.problems)}
        if self.spec is not None:
            out.update(index=self.spec.index, path=self.spec.path, name=self.spec.name)
        if self.header is not None:
            arrays = self.header.parsed.arrays
            out.update(kind=self.header.kind, shape=list(arrays[0].desc.shape), dtype=str(arrays[0].desc.dtype),
                       numpy_module=self.header.parsed.numpy_module, header_bytes=self.header.header_bytes)
            if len(arrays) == 2:
                out.update(scales_shape=list(arrays[1].desc.shape), scales_dtype=str(arrays[1].desc.dtype))
        return out


@dataclass(frozen=True)
class InspectReport:
    """Every file's header and every disagreement with the layout."""

    checkpoint: str
    config: ModelConfig | None
    config_source: str
    files: tuple[FileInfo, ...]
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checkpoint": self.checkpoint, "config_source": self.config_source,
                "config": self.config.to_dict() if self.config else None, "total_bytes": self.total_bytes,
                "missing": list(self.missing), "problems": list(self.problems),
                "files": [f.to_dict() for f in self.files]}


def scan_headers(ckpt: Path) -> dict[str, ShardHeader | GrokWeightsError]:
    """Parse the header of every ``tensor*_000`` file in ``ckpt``, by file name (errors kept, not raised)."""
    out: dict[str, ShardHeader | GrokWeightsError] = {}
    for path in shard_files(ckpt):
        try:
            out[path.name] = read_header(path)
        except GrokWeightsError as exc:
            out[path.name] = exc
    return out


def _shape(headers: dict, index: int, which: int = 0) -> tuple[int, ...]:
    header = headers.get(shard_name(index))
    if isinstance(header, GrokWeightsError):
        raise ConfigError(f"cannot infer the model config: {header.message}", path=header.path)
    if not isinstance(header, ShardHeader) or len(header.parsed.arrays) <= which:
        raise ConfigError(f"cannot infer the model config: {shard_name(index)} is missing or not shaped like "
                          "a Grok-1 shard; pass --preset NAME or --config FILE")
    return header.parsed.arrays[which].desc.shape


def _determined(headers: dict) -> dict[str, int]:
    """The config quantities the shapes fix: sizes of the embedding, experts, attention, blocks."""
    vocab, emb = _shape(headers, 0)
    layer_files = len(headers) - 2
    if layer_files <= 0 or layer_files % 12:
        raise ConfigError(f"cannot infer the model config: {len(headers)} shard files is not 2 + 12 x layers",
                          expected="2 + 12 x num_layers", actual=len(headers))
    experts, _, ffn = _shape(headers, 2)
    blocks = _shape(headers, 3, 1)[-2]
    kv = _shape(headers, 5)[-1]
    q = _shape(headers, 7)[-1]
    return {"vocab_size": vocab, "emb_size": emb, "num_layers": layer_files // 12, "num_experts": experts,
            "ffn_size": ffn, "q_size": q, "kv_size": kv, "scale_blocks": blocks}


def _widening_factor(emb: int, ffn: int) -> float | None:
    for candidate in (ffn * 3 / (2 * emb), ffn * 3 // (2 * emb), (ffn * 3 + 2) / (2 * emb)):
        if candidate and ffn_size(emb, candidate) == ffn:
            return int(candidate) if float(candidate).is_integer() else candidate
    return None


def infer_config(headers: dict[str, ShardHeader | GrokWeightsError], *,
                 for_layout_only: bool = False) -> tuple[ModelConfig, str]:
    """The model config the shard shapes determine, and where it came from.

    A known preset (at any number of layers) whose shapes all match is returned as that preset. Otherwise
    the shapes leave fields open (head split, top-k, multipliers): with ``for_layout_only`` those get
    placeholder values good enough to lay out the files; without, :class:`ConfigError` names them.
    """
    d = _determined(headers)
    for name, cfg in PRESETS.items():
        shape_fields = {"vocab_size": cfg.vocab_size, "emb_size": cfg.emb_size, "num_experts": cfg.num_experts,
                        "ffn_size": cfg.ffn_size, "q_size": cfg.q_size, "kv_size": cfg.kv_size,
                        "scale_blocks": cfg.scale_blocks}
        if all(d[k] == v for k, v in shape_fields.items()) and d["num_layers"] <= cfg.num_layers:
            return cfg.with_layers(d["num_layers"]), f"shapes match preset {name!r} ({d['num_layers']} layers)"
    if not for_layout_only:
        raise ConfigError(
            "the shard shapes do not determine the model config fields "
            f"{', '.join(UNDETERMINED_FIELDS)} (they match no preset); pass --preset NAME or --config FILE "
            f"(a JSON object with the config fields). Determined from shapes: {d}",
            expected=list(UNDETERMINED_FIELDS), actual=d)
    wf = _widening_factor(d["emb_size"], d["ffn_size"])
    key = math.gcd(d["q_size"], d["kv_size"])
    if wf is None or key % 2:
        raise ConfigError(f"the shard shapes fit no Grok-1-shaped model: {d}", actual=d)
    config = ModelConfig(num_layers=d["num_layers"], emb_size=d["emb_size"], num_q_heads=d["q_size"] // key,
                         num_kv_heads=d["kv_size"] // key, key_size=key, num_experts=d["num_experts"],
                         num_selected_experts=1, widening_factor=wf, vocab_size=d["vocab_size"],
                         scale_blocks=d["scale_blocks"])
    return config, "inferred from shapes (layout only)"


def checkpoint_config(checkpoint_dir: str | os.PathLike[str], config: ModelConfig | str | None = None
                      ) -> ModelConfig:
    """The model config of a checkpoint folder (the one holding ``ckpt-0/``, or ``ckpt-0/`` itself).

    ``config`` when given (a ModelConfig or a preset name); else the manifest recorded beside the
    checkpoint; else what the shard shapes determine (:class:`ConfigError` names the fields they leave open).
    """
    if isinstance(config, str):
        return preset(config)
    if config is not None:
        return config
    manifest = find_local_manifest(checkpoint_dir)
    if manifest is not None:
        return manifest.config
    return infer_config(scan_headers(resolve_checkpoint_dir(checkpoint_dir)))[0]


def _problems_for(spec: TensorSpec, header: ShardHeader | GrokWeightsError | None,
                  by_desc: dict[Any, list[TensorSpec]]) -> list[str]:
    if header is None:
        return ["missing"]
    if isinstance(header, GrokWeightsError):
        return [f"unreadable: {header.message}"]
    problems = spec.check(header.parsed)
    if problems:
        others = [s for s in by_desc.get(header.desc, []) if s.index != spec.index]
        if others:
            problems.append(f"holds a tensor shaped like {others[0].key} (file {others[0].index}): misordered?")
    return problems


def inspect_checkpoint(checkpoint_dir: str | os.PathLike[str], *, config: ModelConfig | None = None,
                       config_source: str = "given") -> InspectReport:
    """Read every shard header and check each file against the layout of ``config``.

    Without ``config`` the manifest recorded beside the checkpoint is used, else the shapes are used to
    infer the layout.
    """
    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    headers = scan_headers(ckpt)
    if config is None:
        local = find_local_manifest(ckpt)
        if local is not None:
            config, config_source = local.config, f"manifest {local.origin}"
        else:
            config, config_source = infer_config(headers, for_layout_only=True)
    specs = layout(config)
    by_desc: dict[Any, list[TensorSpec]] = {}
    for spec in specs:
        by_desc.setdefault(spec.desc, []).append(spec)
    files, missing, problems = [], [], []
    for spec in specs:
        header = headers.get(spec.file)
        found = _problems_for(spec, header, by_desc)
        if header is None:
            missing.append(spec.file)
            problems.append(f"{spec.file}: missing ({spec.key})")
            continue
        files.append(FileInfo(spec.file, (ckpt / spec.file).stat().st_size, spec,
                              header if isinstance(header, ShardHeader) else None, tuple(found)))
        problems += [f"{spec.file} ({spec.key}): {p}" for p in found]
    known = {s.file for s in specs}
    for name, header in headers.items():
        if name not in known:
            files.append(FileInfo(name, (ckpt / name).stat().st_size, None,
                                  header if isinstance(header, ShardHeader) else None, ("not in the layout",)))
            problems.append(f"{name}: unexpected file, not in the layout of a {config.num_layers}-layer model")
    return InspectReport(str(ckpt), config, config_source, tuple(files), tuple(missing), tuple(problems))
