"""The reshard plan: pure data saying what every store array will be, before any byte is written.

``plan_reshard(layout, mesh, rules)`` decides, for every tensor of the checkpoint, the zarr3 array(s) it
becomes (a plain array, or an int8 ``weight`` plus float32 ``scales``), their partition spec on the
mesh, chunk shape, codec, and how many bytes each device will read. It does no I/O and imports no
heavy dependency, so ``--dry-run`` is instant and the plan is tested with literals.

Chunking rule: start from one device's shard of the array, then split it (smallest prime factor first,
leading dimension first) until a chunk holds at most ``chunk_bytes``. Every chunk therefore lies inside
exactly one device's shard and every shard is a whole number of chunks: a device never reads a byte it
does not need. The leading dimension is also split until one row of chunks (a chunk's extent on the
leading dimension, across the whole array) is at most ``ROW_BYTES`` while chunks stay over
``MIN_CHUNK_BYTES``, which bounds the writer's memory. Shards under ``chunk_bytes`` are one chunk.

Scales: the release's block scales have ``nb`` row blocks on the weight's input axis (8 where the
release splits that axis 8 ways, else 1). A store keeps them re-blocked to blocks of
``gcd(in / nb, in / k)`` rows, ``k`` being how many ways the plan splits the input axis, by repeating
each source row: every stored block lies within one source block (so values are unchanged) and within
one device's shard (so a device dequantises its shard with its own scales alone).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..checkpoint.config import ModelConfig
from ..checkpoint.dtypes import ITEMSIZE
from ..checkpoint.layout import TensorSpec
from ..errors import UsageError
from .mesh import MeshSpec, RuleSet, Spec, shard_factors, spec_from_json, spec_to_json

__all__ = ["ArrayPlan", "ReshardPlan", "plan_reshard", "parse_compression", "stored_scale_blocks",
           "chunk_shape_for", "FORMAT_VERSION", "SCALES_DTYPE", "DEFAULT_CHUNK_BYTES", "MAX_CHUNK_BYTES"]

#: store format: 2 adds float32 scales, crc32c chunks, the chunk record and the index's metadata digests.
FORMAT_VERSION = 2
MiB = 1024 * 1024
DEFAULT_CHUNK_BYTES = 16 * MiB
MAX_CHUNK_BYTES = 64 * MiB
MIN_CHUNK_BYTES = 1 * MiB
ROW_BYTES = 256 * MiB
DTYPES = ("keep", "bfloat16")
#: stored dtype of block scales: bfloat16 -> float32 is exact, and zarr-python has no bfloat16.
SCALES_DTYPE = "float32"


def parse_compression(text: str) -> str:
    """Normalise ``none`` / ``zstd`` / ``zstd:LEVEL`` (level 1-22, default 1) to ``none`` or ``zstd:N``."""
    text = (text or "none").strip().lower()
    if text in ("none", "raw"):
        return "none"
    name, _, level = text.partition(":")
    if name == "zstd":
        if not level:
            return "zstd:1"
        if level.lstrip("-").isdigit() and 1 <= int(level) <= 22:
            return f"zstd:{int(level)}"
    raise UsageError(f"bad compression {text!r}: expected 'none', 'zstd' or 'zstd:LEVEL' with LEVEL 1-22",
                     expected="none|zstd[:LEVEL]", actual=text)


def _smallest_factor(n: int) -> int:
    for p in range(2, math.isqrt(n) + 1):
        if n % p == 0:
            return p
    return n


def chunk_shape_for(shard: tuple[int, ...], shape: tuple[int, ...], itemsize: int,
                    chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[int, ...]:
    """The chunk shape for arrays of ``shape`` whose device shards are ``shard`` (see module docstring)."""
    chunk = list(shard)

    def nbytes(c: list[int]) -> int:
        return math.prod(c) * itemsize

    def row_bytes(c: list[int]) -> int:
        return c[0] * math.prod(shape[1:]) * itemsize

    while (chunk and chunk[0] > 1 and row_bytes(chunk) > ROW_BYTES
           and nbytes(chunk) // _smallest_factor(chunk[0]) >= MIN_CHUNK_BYTES):
        chunk[0] //= _smallest_factor(chunk[0])
    for dim in range(len(chunk)):
        while nbytes(chunk) > chunk_bytes and chunk[dim] > 1:
            chunk[dim] //= _smallest_factor(chunk[dim])
    return tuple(chunk)


def stored_scale_blocks(rows: int, source_blocks: int, split: int) -> int:
    """Row blocks the store keeps for scales of ``source_blocks`` blocks on an input axis of ``rows``
    rows split ``split`` ways: blocks of ``gcd(rows / source_blocks, rows / split)`` rows."""
    return rows // math.gcd(rows // source_blocks, rows // split)


@dataclass(frozen=True)
class ArrayPlan:
    """One zarr3 array of the store.

    Attributes:
        key: the parameter, ``module/path/param``.
        role: ``array`` (plain or dequantised), ``weight`` (int8) or ``scales`` (block scales, stored as
            float32: the release's bfloat16 values, exactly, in a type every zarr v3 reader knows).
        store_path: where the array lives, relative to the store root.
        source_file: the checkpoint shard it comes from.
        source_kind: ``array`` or ``quantized`` (the shard's kind).
        shape, dtype: of the stored array.
        partition_spec: over the mesh's axis names, one entry per leading dimension.
        chunk_shape: zarr chunk shape; divides the device shard shape.
        codec: ``none`` or ``zstd:LEVEL``.
        source_blocks: for scales (and dequantised weights), the source's row blocks on the input axis.
    """

    key: str
    role: str
    store_path: str
    source_file: str
    source_kind: str
    shape: tuple[int, ...]
    dtype: str
    partition_spec: Spec
    chunk_shape: tuple[int, ...]
    codec: str = "none"
    source_blocks: int | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]

    @property
    def chunk_bytes(self) -> int:
        return math.prod(self.chunk_shape) * ITEMSIZE[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "role": self.role, "store_path": self.store_path, "source_file": self.source_file,
            "source_kind": self.source_kind, "shape": list(self.shape), "dtype": self.dtype,
            "partition_spec": spec_to_json(self.partition_spec), "chunk_shape": list(self.chunk_shape),
            "codec": self.codec, "source_blocks": self.source_blocks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArrayPlan:
        return cls(
            key=data["key"], role=data["role"], store_path=data["store_path"], source_file=data["source_file"],
            source_kind=data["source_kind"], shape=tuple(data["shape"]), dtype=data["dtype"],
            partition_spec=spec_from_json(data["partition_spec"], where=data["key"]),
            chunk_shape=tuple(data["chunk_shape"]), codec=data["codec"], source_blocks=data.get("source_blocks"),
        )


@dataclass(frozen=True)
class ReshardPlan:
    """Every array of a store for one mesh and rule set; pure data with a JSON round-trip."""

    mesh: MeshSpec
    rules: RuleSet
    arrays: tuple[ArrayPlan, ...]
    config: ModelConfig | None = None
    dtype: str = "keep"
    compression: str = "none"
    layers: tuple[int, ...] | None = None
    version: int = FORMAT_VERSION
    _by_path: dict = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_path", {a.store_path: a for a in self.arrays})

    def array(self, store_path: str) -> ArrayPlan:
        return self._by_path[store_path]

    def factors(self, array: ArrayPlan) -> tuple[int, ...]:
        """How many ways each dimension of ``array`` is split on the plan's mesh."""
        return shard_factors(array.key, array.shape, array.partition_spec, self.mesh)

    def shard_shape(self, array: ArrayPlan) -> tuple[int, ...]:
        return tuple(s // f for s, f in zip(array.shape, self.factors(array), strict=True))

    def shard_bytes(self, array: ArrayPlan) -> int:
        return math.prod(self.shard_shape(array)) * ITEMSIZE[array.dtype]

    @property
    def total_bytes(self) -> int:
        """Bytes of the store before compression."""
        return sum(a.nbytes for a in self.arrays)

    @property
    def bytes_per_device(self) -> tuple[int, ...]:
        """Bytes each device of the mesh reads to load the store (its shard of every array)."""
        per_array = sum(self.shard_bytes(a) for a in self.arrays)
        return tuple(per_array for _ in range(self.mesh.size))

    @property
    def keys(self) -> list[str]:
        """The parameters, in file order."""
        return list(dict.fromkeys(a.key for a in self.arrays))

    def keys_paths(self) -> list[str]:
        """The store paths of every array, in file order."""
        return [a.store_path for a in self.arrays]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "mesh": self.mesh.to_dict(), "rules": self.rules.to_dict(),
            "config": self.config.to_dict() if self.config is not None else None, "dtype": self.dtype,
            "compression": self.compression, "layers": list(self.layers) if self.layers is not None else None,
            "total_bytes": self.total_bytes, "bytes_per_device": list(self.bytes_per_device),
            "arrays": [a.to_dict() for a in self.arrays],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReshardPlan:
        if data.get("version") != FORMAT_VERSION:
            raise UsageError(f"reshard plan format version {data.get('version')!r} is not supported "
                             f"(expected {FORMAT_VERSION})", expected=FORMAT_VERSION, actual=data.get("version"))
        return cls(
            mesh=MeshSpec.from_dict(data["mesh"]), rules=RuleSet.from_dict(data["rules"]),
            arrays=tuple(ArrayPlan.from_dict(a) for a in data["arrays"]),
            config=ModelConfig.from_dict(data["config"]) if data.get("config") is not None else None,
            dtype=data["dtype"], compression=data["compression"],
            layers=tuple(data["layers"]) if data.get("layers") is not None else None,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ReshardPlan:
        return cls.from_dict(json.loads(text))


def _arrays_for(spec: TensorSpec, pspec: Spec, mesh: MeshSpec, *, dtype: str, codec: str,
                chunk_bytes: int) -> list[ArrayPlan]:
    factors = shard_factors(spec.key, spec.shape, pspec, mesh)

    def make(role: str, path: str, shape: tuple[int, ...], dt: str, blocks: int | None = None) -> ArrayPlan:
        shard = tuple(s // f for s, f in zip(shape, factors, strict=True))
        return ArrayPlan(spec.key, role, path, spec.file, spec.kind, shape, dt, pspec,
                         chunk_shape_for(shard, shape, ITEMSIZE[dt], chunk_bytes), codec, blocks)

    if spec.kind == "array":
        return [make("array", spec.key, spec.shape, spec.dtype)]
    if dtype == "bfloat16":
        return [make("array", spec.key, spec.shape, "bfloat16", spec.scale_blocks)]
    rows, split = spec.shape[-2], factors[-2]
    blocks = stored_scale_blocks(rows, spec.scale_blocks, split)
    scales_shape = (*spec.shape[:-2], blocks, spec.shape[-1])
    return [make("weight", f"{spec.key}/weight", spec.shape, spec.dtype),
            make("scales", f"{spec.key}/scales", scales_shape, SCALES_DTYPE, spec.scale_blocks)]


def plan_reshard(layout: Iterable[TensorSpec], mesh: MeshSpec, rules: RuleSet, *,
                 config: ModelConfig | None = None, dtype: str = "keep", compression: str = "none",
                 layers: Iterable[int] | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> ReshardPlan:
    """Plan the store for ``layout`` on ``mesh`` under ``rules`` (pure; no I/O).

    Args:
        layout: the checkpoint's tensors (``grokweights.checkpoint.layout.layout(config)``).
        mesh: the target mesh.
        rules: partition rules; every tensor must match one and every rule must match a tensor.
        config: the model config, recorded in the plan.
        dtype: ``keep`` (int8 weights + scales, float32 arrays) or ``bfloat16`` (dequantised weights).
        compression: ``none`` or ``zstd[:LEVEL]``.
        layers: keep only these decoder layers (the embedding and final norm are always kept).
        chunk_bytes: the largest chunk (at most ``MAX_CHUNK_BYTES``).

    Raises:
        MeshError: a rule names an axis the mesh lacks, a mesh size does not divide a dimension, a tensor
            matches no rule or a rule matches no tensor.
    """
    if dtype not in DTYPES:
        raise UsageError(f"bad dtype {dtype!r}: expected one of {', '.join(DTYPES)}", expected=DTYPES, actual=dtype)
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise UsageError(f"chunk_bytes {chunk_bytes} outside {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES}",
                         actual=chunk_bytes)
    codec = parse_compression(compression)
    specs = list(layout)
    specs_by_key = rules.resolve(s.key for s in specs)
    wanted = set(layers) if layers is not None else None
    arrays: list[ArrayPlan] = []
    for spec in specs:
        if wanted is not None and spec.layer is not None and spec.layer not in wanted:
            continue
        arrays += _arrays_for(spec, specs_by_key[spec.key], mesh, dtype=dtype, codec=codec, chunk_bytes=chunk_bytes)
    return ReshardPlan(mesh=mesh, rules=rules, arrays=tuple(arrays), config=config, dtype=dtype, compression=codec,
                       layers=tuple(sorted(wanted)) if wanted is not None else None)
