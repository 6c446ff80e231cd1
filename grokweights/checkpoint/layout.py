"""The ordered list of tensors in an official checkpoint, derived from a :class:`ModelConfig`.

The release stores one tensor per file, in the jax tree-flatten order of the haiku params dict, whose
module paths sort as strings (so layers come 0, 1, 10, 11, ..., 19, 2, 20, ...)::

    ckpt-0/
        tensor00000_000    language_model/in_out_embed      embeddings  (vocab, emb)        float32
        tensor00001_000    language_model/rms_norm          scale       (emb,)              float32
        tensor00002_000    transformer/decoder_layer_0/moe/linear     w  int8 (E, emb, ffn) + scales
        ...                (12 files per layer, see ``_param_table``)
        tensor{2+12L-1}_000

``layout(config)`` is pure: it returns :class:`TensorSpec` records with the file name, module path,
param name, kind (plain array or int8 + block scales), shapes, dtypes, the release's partition spec and
the exact file size the shard must have.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..constants import shard_name
from ..errors import ConfigError, LayoutMismatchError, UsageError
from .config import MAXIMA, ModelConfig
from .dtypes import ITEMSIZE
from .pickle_desc import ArrayDesc, QuantizedDesc, ShardDesc
from .pickle_encode import encoded_size, payload_sizes
from .pickle_parse import ParsedShard

__all__ = ["TensorSpec", "layout", "parse_layers", "layer_indices", "select", "layer_of", "PartitionSpec"]

#: a partition spec: one entry per leading dimension, None (replicated), an axis name, or several.
PartitionSpec = tuple[None | str | tuple[str, ...], ...]

@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the checkpoint: where it lives and what it must look like.

    ``kind`` is ``"array"`` (a plain float32 array) or ``"quantized"`` (an int8 ``weight`` plus bfloat16
    block ``scales``; ``shape``/``dtype`` describe the weight).
    """

    index: int
    file: str
    path: str
    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    scales_shape: tuple[int, ...] | None
    scales_dtype: str | None
    partition_spec: PartitionSpec

    def __post_init__(self) -> None:
        if self.kind not in ("array", "quantized"):
            raise ConfigError(f"tensor {self.key}: kind must be 'array' or 'quantized', got {self.kind!r}")
        if (self.kind == "quantized") != (self.scales_shape is not None):
            raise ConfigError(f"tensor {self.key}: scales_shape must be given exactly for quantized tensors")

    @property
    def key(self) -> str:
        """``module/path/param`` (e.g. ``transformer/decoder_layer_0/router/w``)."""
        return f"{self.path}/{self.name}"

    @property
    def layer(self) -> int | None:
        """The decoder layer this tensor belongs to, or None for the embedding and final norm."""
        return layer_of(self.path)

    @property
    def scale_blocks(self) -> int:
        """Row blocks of the scales along the weight's input axis (1 for plain arrays)."""
        return self.scales_shape[-2] if self.scales_shape else 1

    @cached_property
    def desc(self) -> ShardDesc:
        """The shard header this tensor must have."""
        weight = ArrayDesc(self.shape, self.dtype)
        if self.kind == "array":
            return weight
        return QuantizedDesc(weight, ArrayDesc(self.scales_shape, self.scales_dtype))

    @cached_property
    def expected_file_size(self) -> int:
        """Exact size of the shard file, as the release's numpy 1.x pickler writes it."""
        return encoded_size(self.desc)

    @property
    def nbytes(self) -> int:
        """Bytes of payload (weight plus scales)."""
        return sum(payload_sizes(self.desc))

    def check(self, parsed: ParsedShard) -> list[str]:
        """Every way ``parsed`` (a shard header) disagrees with this spec; empty when it matches."""
        problems = []
        if parsed.kind != self.kind:
            return [f"kind: expected {self.kind}, found {parsed.kind}"]
        names = ("weight", "scales") if self.kind == "quantized" else ("array",)
        want = (self.desc.weight, self.desc.scales) if self.kind == "quantized" else (self.desc,)
        for name, expected, found in zip(names, want, parsed.arrays):
            if expected.shape != found.desc.shape:
                problems.append(f"{name} shape: expected {list(expected.shape)}, found {list(found.desc.shape)}")
            if expected.dtype != found.desc.dtype:
                problems.append(f"{name} dtype: expected {expected.dtype}, found {found.desc.dtype}")
            if found.fortran:
                problems.append(f"{name} order: expected C order, found Fortran order")
        return problems

    def require(self, parsed: ParsedShard, *, where: str) -> None:
        """Raise :class:`LayoutMismatchError` when ``parsed`` disagrees with this spec."""
        problems = self.check(parsed)
        if problems:
            raise LayoutMismatchError(
                f"{where}: does not hold {self.key} (file {self.index}): {'; '.join(problems)}",
                path=where, expected=self.to_dict(), actual=problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "file": self.file, "path": self.path, "name": self.name, "kind": self.kind,
            "shape": list(self.shape), "dtype": self.dtype,
            "scales_shape": list(self.scales_shape) if self.scales_shape is not None else None,
            "scales_dtype": self.scales_dtype,
            "partition_spec": [list(p) if isinstance(p, tuple) else p for p in self.partition_spec],
            "expected_file_size": self.expected_file_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        spec = cls(
            index=int(data["index"]), file=data["file"], path=data["path"], name=data["name"],
            kind=data["kind"], shape=tuple(int(d) for d in data["shape"]), dtype=data["dtype"],
            scales_shape=tuple(int(d) for d in data["scales_shape"]) if data.get("scales_shape") else None,
            scales_dtype=data.get("scales_dtype"),
            partition_spec=tuple(tuple(p) if isinstance(p, list) else p for p in data["partition_spec"]),
        )
        for field in ("dtype", "scales_dtype"):
            value = getattr(spec, field)
            if value is not None and value not in ITEMSIZE:
                raise ConfigError(f"tensor {spec.key}: unknown {field} {value!r}", expected=sorted(ITEMSIZE),
                                  actual=value)
        return spec


def _param_table(config: ModelConfig) -> list[tuple[str, str, str, tuple[int, ...], PartitionSpec]]:
    """(module path, param, kind, shape, release partition spec) for every tensor, unordered."""
    emb, ffn, experts = config.emb_size, config.ffn_size, config.num_experts
    table = [
        ("language_model/in_out_embed", "embeddings", "array", (config.vocab_size, emb),
         (None, ("data", "model"))),
        ("language_model/rms_norm", "scale", "array", (emb,), (None,)),
    ]
    for i in range(config.num_layers):
        layer = f"transformer/decoder_layer_{i}"
        table += [
            (f"{layer}/moe/linear", "w", "quantized", (experts, emb, ffn), (None, "data", "model")),
            (f"{layer}/moe/linear_1", "w", "quantized", (experts, ffn, emb), (None, "model", "data")),
            (f"{layer}/moe/linear_v", "w", "quantized", (experts, emb, ffn), (None, "data", "model")),
            (f"{layer}/multi_head_attention/key", "w", "quantized", (emb, config.kv_size), ("data", "model")),
            (f"{layer}/multi_head_attention/linear", "w", "quantized", (config.q_size, emb), ("model", "data")),
            (f"{layer}/multi_head_attention/query", "w", "quantized", (emb, config.q_size), ("data", "model")),
            (f"{layer}/multi_head_attention/value", "w", "quantized", (emb, config.kv_size), ("data", "model")),
            (f"{layer}/rms_norm", "scale", "array", (emb,), (None,)),
            (f"{layer}/rms_norm_1", "scale", "array", (emb,), (None,)),
            (f"{layer}/rms_norm_2", "scale", "array", (emb,), (None,)),
            (f"{layer}/rms_norm_3", "scale", "array", (emb,), (None,)),
            (f"{layer}/router", "w", "array", (emb, experts), ("data",)),
        ]
    return table


def layout(config: ModelConfig) -> list[TensorSpec]:
    """The checkpoint's tensors in file order (jax tree-flatten order of the params dict)."""
    specs = []
    for index, (path, name, kind, shape, pspec) in enumerate(sorted(_param_table(config))):
        scales_shape = None
        if kind == "quantized":
            # the release splits the input axis over `model` for two weights; their scales have row blocks
            blocks = config.scale_blocks if pspec[-2] == "model" else 1
            scales_shape = (*shape[:-2], blocks, shape[-1])
        specs.append(TensorSpec(
            index=index, file=shard_name(index), path=path, name=name, kind=kind,
            shape=shape, dtype="int8" if kind == "quantized" else "float32", scales_shape=scales_shape,
            scales_dtype="bfloat16" if kind == "quantized" else None, partition_spec=pspec,
        ))
    return specs


_LAYER_RE = re.compile(r"(?:^|/)decoder_layer_(\d+)(?:/|$)")


def layer_of(path: str) -> int | None:
    """The decoder layer index in a module path, or None."""
    match = _LAYER_RE.search(path)
    return int(match.group(1)) if match else None


def parse_layers(text: str, *, num_layers: int | None = None) -> tuple[int, ...]:
    """Parse ``"0-7,12"`` into sorted layer indices, checking them against ``num_layers``."""
    limit = num_layers if num_layers is not None else MAXIMA["num_layers"]
    shown = text if len(text) <= 60 else text[:60] + "..."
    ranges = []
    for part in text.replace(" ", "").split(","):
        match = re.fullmatch(r"(\d{1,12})(?:-(\d{1,12}))?", part)
        if not match:
            raise UsageError(f"--layers: bad layer range {part[:30]!r} in {shown!r}; expected e.g. '0-7' or "
                             "'0,2,5-9'", expected="N or N-M, comma separated", actual=text)
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise UsageError(f"--layers: bad layer range {part!r}: {stop} < {start}", actual=text)
        if stop >= limit:  # checked before anything is built: '0-99999999999' costs nothing
            raise UsageError(f"--layers: layer {stop} does not exist: the model has layers 0-{limit - 1}",
                             expected=f"0-{limit - 1}", actual=text)
        ranges.append((start, stop))
    return tuple(sorted({i for start, stop in ranges for i in range(start, stop + 1)}))


def layer_indices(layers: Iterable[int] | str | None, *, num_layers: int) -> tuple[int, ...]:
    """``None`` (every layer), ``"0-3,7"`` or indices -> sorted, distinct layer indices, checked to exist."""
    if layers is None:
        return tuple(range(num_layers))
    if isinstance(layers, str):
        return parse_layers(layers, num_layers=num_layers)
    chosen = tuple(sorted({int(i) for i in layers}))
    bad = [i for i in chosen if not 0 <= i < num_layers]
    if bad:
        raise UsageError(f"layer {', '.join(map(str, bad))} does not exist: the model has layers "
                         f"0-{num_layers - 1}", expected=f"0-{num_layers - 1}", actual=bad)
    return chosen


def select(specs: Iterable[TensorSpec], *, layers: Iterable[int] | None = None,
           include_shared: bool = True) -> list[TensorSpec]:
    """The specs of the given layers (all when None), plus the embedding and final norm if asked."""
    wanted = set(layers) if layers is not None else None
    out = []
    for spec in specs:
        layer = spec.layer
        if layer is None:
            if include_shared:
                out.append(spec)
        elif wanted is None or layer in wanted:
            out.append(spec)
    return out
