"""Will it fit? Bytes per device of a forward pass on a mesh, planned before anything is loaded.

``plan_memory(config, mesh, ...)`` is pure (no jax, no I/O): the weights come from the reshard plan
(:func:`grokweights.sharding.plan.plan_reshard`, so the bytes are exactly what ``load`` puts on each device); the
activations are an estimate of the largest live buffers of :func:`grokweights.forward` (logits, attention
scores, residual stream, the MoE's sorted rows, and the weights dequantised on the fly: one expert's three
matrices, one layer's attention projections, the bfloat16 copy of the unembedding), times
``ACTIVATION_MARGIN``. A device fits when weights plus activations stay within ``USABLE_FRACTION`` of its
memory. Every factorisation of the device count over the rule set's mesh axes is sized too, so the plan
names a mesh that fits when the requested one does not, and how many layers would fit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..checkpoint.config import ModelConfig
from ..checkpoint.dtypes import ITEMSIZE
from ..checkpoint.layout import layer_indices, layout
from ..errors import MeshError, UsageError
from .mesh import MAX_DEVICES, MeshSpec, RuleSet, as_mesh_spec, axis_names, complete_mesh, load_rules, shard_factors
from .plan import ReshardPlan, plan_reshard

__all__ = ["plan_memory", "MachinePlan", "MeshOption", "activation_bytes", "GiB", "ACTIVATION_MARGIN",
           "USABLE_FRACTION"]

GiB = 1024**3
#: the activation estimate is multiplied by this (temporaries the estimate does not name).
ACTIVATION_MARGIN = 1.25
#: the MoE's tile height is at most this (``grokweights.model.moe.MAX_TILE_ROWS``).
MAX_TILE_ROWS = 128
#: share of a device's memory the weights and activations may use (the rest: runtime, fragmentation).
USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class MeshOption:
    """One mesh the devices could form, and its bytes per device."""

    mesh: str
    weight_bytes: int
    activation_bytes: int
    fits: bool | None

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"mesh": self.mesh, "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes,
                "total_bytes": self.total_bytes, "fits": self.fits}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeshOption:
        return cls(data["mesh"], int(data["weight_bytes"]), int(data["activation_bytes"]), data["fits"])


@dataclass(frozen=True)
class MachinePlan:
    """Bytes per device for a forward pass of ``layers`` on ``mesh``, and whether they fit.

    ``fits`` is None when no memory size was given. ``problems`` says why it does not fit (or why the mesh
    cannot be used at all); ``suggestion`` names the smallest-footprint mesh of ``devices`` that fits.
    """

    mesh: str
    rules: str
    layers: tuple[int, ...]
    batch: int
    length: int
    dtype: str
    devices: int
    device_memory: int | None
    host_memory: int | None
    weight_bytes: int
    activation_bytes: int
    activations: dict[str, int]
    host_bytes: int
    fits: bool | None
    max_layers: int | None
    problems: tuple[str, ...]
    options: tuple[MeshOption, ...]
    suggestion: str | None

    @property
    def total_bytes(self) -> int:
        """Weights plus activations on one device."""
        return self.weight_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "mesh": self.mesh, "rules": self.rules, "layers": list(self.layers), "batch": self.batch,
            "length": self.length, "dtype": self.dtype, "devices": self.devices,
            "device_memory": self.device_memory, "host_memory": self.host_memory,
            "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes,
            "total_bytes": self.total_bytes, "activations": dict(self.activations), "host_bytes": self.host_bytes,
            "fits": self.fits, "max_layers": self.max_layers, "problems": list(self.problems),
            "options": [o.to_dict() for o in self.options], "suggestion": self.suggestion,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachinePlan:
        return cls(
            mesh=data["mesh"], rules=data["rules"], layers=tuple(data["layers"]), batch=data["batch"],
            length=data["length"], dtype=data["dtype"], devices=data["devices"],
            device_memory=data["device_memory"], host_memory=data["host_memory"],
            weight_bytes=data["weight_bytes"], activation_bytes=data["activation_bytes"],
            activations=dict(data["activations"]), host_bytes=data["host_bytes"], fits=data["fits"],
            max_layers=data["max_layers"], problems=tuple(data["problems"]),
            options=tuple(MeshOption.from_dict(o) for o in data["options"]), suggestion=data["suggestion"],
        )


def _elements_per_device(shape: tuple[int, ...], spec: Any, mesh: MeshSpec, key: str) -> int:
    return math.prod(shape) // math.prod(shard_factors(key, shape, spec, mesh))


def activation_bytes(config: ModelConfig, reshard: ReshardPlan, *, batch: int, length: int,
                     dtype: str) -> dict[str, int]:
    """Estimated bytes of the largest live buffers of one forward pass on one device, by kind."""
    c = ITEMSIZE[dtype]
    mesh = reshard.mesh
    data = mesh.axis_size("data") if "data" in mesh.names and batch % mesh.axis_size("data") == 0 else 1
    tokens = batch * length
    routed = tokens * config.num_selected_experts
    rows = min(MAX_TILE_ROWS, max(1, routed // config.num_experts))  # bounds the MoE's tile height
    emb, ffn = config.emb_size, config.ffn_size
    by_key = {a.key: a for a in reshard.arrays if a.role in ("array", "weight")}
    layer_keys = [k for k in by_key if k.startswith("transformer/")]
    first = layer_keys[0].split("/")[1] if layer_keys else None

    def dequantised(suffix: str, per_expert: bool = False) -> int:
        array = by_key.get(f"transformer/{first}/{suffix}/w") if first else None
        if array is None:
            return 0
        elements = _elements_per_device(array.shape, array.partition_spec, mesh, array.key)
        factors = shard_factors(array.key, array.shape, array.partition_spec, mesh)
        return (elements * factors[0] // array.shape[0] if per_expert else elements) * c

    embed = by_key["language_model/in_out_embed/embeddings"]
    return {
        "logits": batch * length * config.vocab_size * (4 + c) // data,
        "attention": (3 * batch * config.num_q_heads * length * length * 4
                      + 2 * tokens * (config.q_size + 2 * config.kv_size) * c) // data,
        "residual": 6 * tokens * emb * c // data + tokens * emb * 4,
        "moe": (2 * (routed + rows) * emb + 3 * rows * ffn + routed * emb) * c,
        "dequantised_weights": (
            sum(dequantised(f"moe/{n}", per_expert=True) for n in ("linear", "linear_v", "linear_1"))
            + sum(dequantised(f"multi_head_attention/{n}") for n in ("query", "key", "value", "linear"))
            + (0 if dtype == "float32" else _elements_per_device(embed.shape, embed.partition_spec, mesh,
                                                                 embed.key) * c)),
    }


def _sized(config: ModelConfig, mesh: MeshSpec, rules: RuleSet, layers: tuple[int, ...], *, batch: int,
           length: int, dtype: str, store_dtype: str) -> tuple[ReshardPlan, int, dict[str, int]]:
    reshard = plan_reshard(layout(config), mesh, rules, config=config, dtype=store_dtype, layers=layers)
    acts = activation_bytes(config, reshard, batch=batch, length=length, dtype=dtype)
    return reshard, reshard.bytes_per_device[0], acts


def _activation_total(acts: dict[str, int]) -> int:
    return int(sum(acts.values()) * ACTIVATION_MARGIN)


#: at most this many meshes of the machine's devices are sized as alternatives (a highly composite device
#: count over three axes has thousands).
MAX_OPTIONS = 256


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _factorisations(devices: int, names: tuple[str, ...]) -> Iterable[MeshSpec]:
    """The meshes over ``names`` whose sizes multiply to ``devices`` (the first ``MAX_OPTIONS``)."""
    def split(n: int, axes: int) -> Iterable[tuple[int, ...]]:
        if axes == 1:
            yield (n,)
            return
        for d in _divisors(n):
            for rest in split(n // d, axes - 1):
                yield (d, *rest)

    if not names:
        return
    for sizes in itertools.islice(split(devices, len(names)), MAX_OPTIONS):
        yield MeshSpec(tuple(zip(names, sizes, strict=True)))


def _fits(total: int, memory: int | None) -> bool | None:
    return None if memory is None else total <= memory * USABLE_FRACTION


def plan_memory(config: ModelConfig, mesh: MeshSpec | str, *, rules: RuleSet | str = "grok1",
         layers: Iterable[int] | str | None = None, batch: int = 1, length: int = 16, dtype: str = "bfloat16",
         store_dtype: str = "keep", devices: int | None = None, device_memory: int | None = None,
         host_memory: int | None = None, shared_host: bool = False) -> MachinePlan:
    """Size a forward pass of ``config`` on ``mesh`` for a machine, without loading anything.

    Args:
        config: the model.
        mesh: the mesh (``"data=2,model=4"``); axes the rules name but the mesh lacks get size 1.
        rules: the partition rules the store uses (``grok1``, ``expert``, a file or a RuleSet).
        layers: the decoder layers to run (default: all).
        batch: sequences per forward pass.
        length: tokens per sequence.
        dtype: compute dtype, ``bfloat16`` or ``float32``.
        store_dtype: the store's dtype, ``keep`` (int8 + scales) or ``bfloat16``.
        devices: accelerators on the machine (default: the mesh's size).
        device_memory: bytes of memory per device (unknown: ``fits`` is None).
        host_memory: bytes of host memory.
        shared_host: the devices are the host's CPUs, so their memory is host memory.

    Raises:
        UsageError: bad sizes or dtype. MeshError: the rules cannot shard the model on ``mesh``.
    """
    rules = load_rules(rules)
    mesh = complete_mesh(as_mesh_spec(mesh), rules)
    if dtype not in ("bfloat16", "float32"):
        raise UsageError(f"compute dtype must be bfloat16 or float32, got {dtype!r}", actual=dtype)
    if batch < 1 or length < 1:
        raise UsageError(f"batch and length must be positive, got {batch} and {length}", actual=[batch, length])
    chosen = layer_indices(layers, num_layers=config.num_layers)
    devices = mesh.size if devices is None else devices
    if not 1 <= devices <= MAX_DEVICES:
        raise UsageError(f"--devices {devices}: a machine of 1 to {MAX_DEVICES} devices, please",
                         expected=f"1..{MAX_DEVICES}", actual=devices)
    kw = dict(batch=batch, length=length, dtype=dtype, store_dtype=store_dtype)
    reshard, weights, acts = _sized(config, mesh, rules, chosen, **kw)
    total = weights + _activation_total(acts)
    largest = max(a.nbytes for a in reshard.arrays)
    host = largest + (total * mesh.size if shared_host else 0)
    problems = []
    if mesh.size != devices:
        problems.append(f"mesh {mesh} needs {mesh.size} devices, the machine has {devices}")
    fits = _fits(total, device_memory)
    if fits is False:
        problems.append(f"{total / GiB:.2f} GiB per device needed, {USABLE_FRACTION * device_memory / GiB:.2f} "
                        f"GiB usable of {device_memory / GiB:.2f} GiB")
    if host_memory is not None and host > host_memory * USABLE_FRACTION:
        problems.append(f"{host / GiB:.2f} GiB of host memory needed, {host_memory / GiB:.2f} GiB present")
    options = []
    for candidate in _factorisations(devices, axis_names(rules, mesh)):
        try:
            _, w, a = _sized(config, candidate, rules, chosen, **kw)
        except MeshError:
            continue
        options.append(MeshOption(str(candidate), w, _activation_total(a), _fits(w + _activation_total(a),
                                                                                  device_memory)))
    fitting = sorted((o for o in options if o.fits), key=lambda o: o.total_bytes)
    return MachinePlan(
        mesh=str(mesh), rules=rules.name, layers=chosen, batch=batch, length=length, dtype=dtype, devices=devices,
        device_memory=device_memory, host_memory=host_memory, weight_bytes=weights,
        activation_bytes=_activation_total(acts), activations=acts, host_bytes=host,
        fits=None if fits is None else (fits and not problems), max_layers=_max_layers(
            config, mesh, rules, chosen, device_memory, kw),
        problems=tuple(problems), options=tuple(options), suggestion=fitting[0].mesh if fitting else None)


def _max_layers(config: ModelConfig, mesh: MeshSpec, rules: RuleSet, chosen: tuple[int, ...],
                device_memory: int | None, kw: dict[str, Any]) -> int | None:
    """How many layers (at the requested ones' cost per layer) fit on a device of ``device_memory``."""
    if device_memory is None:
        return None
    _, shared, _ = _sized(config, mesh, rules, (), **kw)
    _, one, acts = _sized(config, mesh, rules, chosen[:1] or (0,), **kw)
    per_layer = max(1, one - shared)
    room = device_memory * USABLE_FRACTION - shared - _activation_total(acts)
    return max(0, min(config.num_layers, int(room // per_layer)))
