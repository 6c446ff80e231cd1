"""The Grok-1 forward pass in plain JAX, jit-compiled with the shardings the parameters already have.

Parameters are the haiku-style dict of :mod:`grokweights.model.params` (``params[path][name]``, int8 weights as
:class:`~grokweights.model.params.QuantizedWeight`), placed on any mesh (or one device)::

    tokens [B, T] int32
      -> embeddings[tokens] * embedding_multiplier_scale                   [B, T, D]
      -> per layer:  h += rms_norm_1(attention(rms_norm(h)))
                     h += rms_norm_3(moe(rms_norm_2(h)))
      -> rms_norm(h) @ embeddings.T * output_multiplier_scale              [B, T, V] float32

The building blocks live in :mod:`grokweights.model.layers` (norms, RoPE, attention) and
:mod:`grokweights.model.moe` (routing and experts). ``docs/model.md`` lists the semantics and where they
differ from upstream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ..checkpoint.config import ModelConfig
from ..checkpoint.layout import TensorSpec, layer_indices, layout, select
from ..errors import LayoutMismatchError, UsageError
from .layers import attention, attention_mask, rms_norm
from .moe import moe
from .params import Params, QuantizedWeight

__all__ = ["forward", "prepare_forward", "dtype_name", "ForwardProgram", "abstract_params", "forward_shape",
           "check_params", "normalize_layers", "auto_mesh", "EMBED", "FINAL_NORM", "PAD_TOKEN"]

logger = logging.getLogger(__name__)

EMBED = "language_model/in_out_embed"
FINAL_NORM = "language_model/rms_norm"
#: token id treated as padding: keys with this id are masked out of attention.
PAD_TOKEN = 0
_DTYPES = ("bfloat16", "float32")


def _layer_path(i: int) -> str:
    return f"transformer/decoder_layer_{i}"


def _decoder_layer(h: jax.Array, params: Params, i: int, mask: jax.Array, config: ModelConfig, dtype: Any,
                   precision: Any) -> jax.Array:
    """One decoder layer: attention and MoE, each between two RMSNorms, added to the residual."""
    pre = _layer_path(i)
    norm = {s: params[f"{pre}/rms_norm{s}"]["scale"] for s in ("", "_1", "_2", "_3")}
    attn_p = {n: params[f"{pre}/multi_head_attention/{n}"]["w"] for n in ("query", "key", "value", "linear")}
    moe_p = {n: params[f"{pre}/moe/{n}"]["w"] for n in ("linear", "linear_v", "linear_1")}
    moe_p["router"] = params[f"{pre}/router"]["w"]
    a = attention(rms_norm(h, norm[""], dtype), attn_p, mask, config, dtype, precision)
    h = h + rms_norm(a, norm["_1"], dtype)
    m = moe(rms_norm(h, norm["_2"], dtype), moe_p, config, dtype, precision)
    return h + rms_norm(m, norm["_3"], dtype)


def _forward_impl(params: Params, tokens: jax.Array, *, config: ModelConfig, layers: tuple[int, ...],
                  dtype: Any, batch_sharding: NamedSharding | None = None) -> jax.Array:
    """The traced forward pass (no checks, no placement): [B, T] int32 -> [B, T, V] float32.

    ``batch_sharding`` (a sharding of the batch axis alone) pins the residual stream to it between layers,
    which keeps the partitioner from re-laying out small activations after the weights' shardings.
    """
    precision = jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None

    def pin(x: jax.Array, sharding: NamedSharding | None = batch_sharding) -> jax.Array:
        return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)

    emb = params[EMBED]["embeddings"]  # [V, D] float32
    h = jnp.take(emb, tokens, axis=0).astype(dtype) * config.embedding_multiplier_scale  # [B, T, D]
    if batch_sharding is not None:  # gathered rows come split like the table's width: collect them first
        h = pin(pin(h, NamedSharding(batch_sharding.mesh, PartitionSpec())))
    mask = attention_mask(tokens, PAD_TOKEN)  # [B, T, S]
    for i in layers:
        h = pin(_decoder_layer(h, params, i, mask, config, dtype, precision))
    h = rms_norm(h, params[FINAL_NORM]["scale"], dtype)
    logits = jnp.einsum("btd,vd->btv", h, emb.astype(dtype), precision=precision)  # tied unembedding
    return (logits * config.output_multiplier_scale).astype(jnp.float32)


def normalize_layers(layers: Iterable[int] | str | None, config: ModelConfig) -> tuple[int, ...]:
    """``None`` (every layer), ``"0-3,7"`` or indices -> sorted, distinct, checked layer indices."""
    return layer_indices(layers, num_layers=config.num_layers)


def dtype_name(dtype: Any) -> str:
    """The name of a compute dtype (``"bfloat16"``, ``"float32"``) from a jnp dtype or its name."""
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in _DTYPES:
        raise UsageError(f"compute dtype must be one of {', '.join(_DTYPES)}, got {name!r}",
                         expected=list(_DTYPES), actual=name)
    return name


def _leaf_problem(spec: TensorSpec, leaf: Any) -> str | None:
    """Why ``leaf`` cannot stand for ``spec`` (shape or kind), or None when it can."""
    if isinstance(leaf, QuantizedWeight):
        if spec.kind != "quantized":
            return "an int8 weight where a float array belongs"
        weight, scales = tuple(leaf.weight.shape), tuple(leaf.scales.shape)
        blocks = scales[-2] if len(scales) >= 2 else 0
        if weight != spec.shape:
            return f"weight shape {list(weight)}, expected {list(spec.shape)}"
        if (len(scales) != len(weight) or scales[:-2] != weight[:-2] or scales[-1] != weight[-1]
                or blocks < 1 or weight[-2] % blocks):
            return f"scales shape {list(scales)} does not fit weight shape {list(weight)}"
        return None
    shape = tuple(getattr(leaf, "shape", ()))
    return None if shape == spec.shape else f"shape {list(shape)}, expected {list(spec.shape)}"


def check_params(params: Params, config: ModelConfig, layers: Iterable[int] | None = None) -> None:
    """Raise :class:`LayoutMismatchError` naming every tensor of ``layers`` that is missing or misshapen.

    Int8 weights may have any number of scale blocks that divides their input axis; a float array of the
    weight's shape may stand in for an int8 weight.
    """
    problems = []
    for spec in select(layout(config), layers=layers):
        module = params.get(spec.path)
        leaf = module.get(spec.name) if isinstance(module, dict) else None
        problem = "missing" if leaf is None else _leaf_problem(spec, leaf)
        if problem:
            problems.append(f"{spec.key}: {problem}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise LayoutMismatchError(f"parameters do not match the model config: {shown}",
                                  path=problems[0].split(":")[0], expected="tensors of layout(config)",
                                  actual=problems)


def _check_tokens(tokens: Any, config: ModelConfig) -> np.ndarray:
    arr = np.asarray(tokens)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.dtype.kind not in "iu":
        raise UsageError(f"tokens must be a non-empty [batch, length] integer array, got shape {list(arr.shape)} "
                         f"of {arr.dtype}", expected="[B, T] integers", actual=f"{list(arr.shape)} {arr.dtype}")
    if arr.min() < 0 or arr.max() >= config.vocab_size:
        raise UsageError(f"token ids must lie in 0..{config.vocab_size - 1}, found {arr.min()}..{arr.max()}",
                         expected=f"0..{config.vocab_size - 1}", actual=[int(arr.min()), int(arr.max())])
    return arr.astype(np.int32)


def _mesh_of(leaves: list[Any]) -> jax.sharding.Mesh | None:
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return sharding.mesh
    return None


def auto_mesh(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """``mesh`` with every axis of type Auto (the same devices and names); ``mesh`` itself when it has no
    Explicit or Manual axes (or this JAX has no axis types)."""
    axis_type = getattr(jax.sharding, "AxisType", None)
    types = getattr(mesh, "axis_types", None)
    if axis_type is None or types is None or all(t == axis_type.Auto for t in types):
        return mesh
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(axis_type.Auto,) * len(mesh.axis_names))


def _as_auto(leaf: Any, mesh: jax.sharding.Mesh, auto: jax.sharding.Mesh) -> Any:
    """A leaf sharded on ``mesh`` re-labelled onto ``auto`` (same devices and layout: no copy is made)."""
    sharding = getattr(leaf, "sharding", None)
    if auto is mesh or not isinstance(sharding, NamedSharding) or sharding.mesh != mesh:
        return leaf
    return jax.device_put(leaf, NamedSharding(auto, sharding.spec))


def _placed(params: Params, tokens: np.ndarray) -> tuple[Params, jax.Array, Any]:
    """Parameters as device arrays, tokens on the same devices, and the output sharding.

    Parameters on a mesh with Explicit axes (``jax.make_mesh``'s default) are re-labelled onto the same mesh
    with Auto axes, without a copy: the forward pass leaves the layout of activations to the partitioner.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    mesh = _mesh_of(leaves)
    if mesh is not None:
        auto = auto_mesh(mesh)
        leaves, mesh = [_as_auto(leaf, mesh, auto) for leaf in leaves], auto
        axis = "data" if "data" in mesh.shape and tokens.shape[0] % mesh.shape["data"] == 0 else None
        target = NamedSharding(mesh, PartitionSpec(axis))
        default = NamedSharding(mesh, PartitionSpec())
    else:
        arrays = [leaf for leaf in leaves if isinstance(leaf, jax.Array)]
        target = default = arrays[0].sharding if arrays else jax.sharding.SingleDeviceSharding(jax.devices()[0])
    leaves = [leaf if isinstance(leaf, jax.Array) else jax.device_put(leaf, default) for leaf in leaves]
    return jax.tree_util.tree_unflatten(treedef, leaves), jax.device_put(tokens, target), target


@functools.lru_cache(maxsize=32)
def _jitted(config: ModelConfig, layers: tuple[int, ...], dtype: str, treedef: Any, shardings: tuple[Any, ...],
            token_sharding: Any) -> Callable[[Params, jax.Array], jax.Array]:
    batch = token_sharding if isinstance(token_sharding, NamedSharding) else None
    fn = functools.partial(_forward_impl, config=config, layers=layers, dtype=jnp.dtype(dtype), batch_sharding=batch)
    in_shardings = (jax.tree_util.tree_unflatten(treedef, shardings), token_sharding)
    return jax.jit(fn, in_shardings=in_shardings, out_shardings=token_sharding)


@dataclass(frozen=True)
class ForwardProgram:
    """A forward pass ready to compile and run: the jitted function and its placed arguments.

    Attributes:
        fn: the function, jitted with the parameters' shardings (call it, or ``.lower(...)`` it).
        params: the parameters it runs on (only the requested layers).
        tokens: the token ids, placed beside the parameters (batch over ``data`` when it divides).
    """

    fn: Any
    params: Params
    tokens: jax.Array

    def __call__(self) -> jax.Array:
        return self.fn(self.params, self.tokens)

    def compile(self) -> Callable[[], jax.Array]:
        """Compile ahead of time; the returned callable runs the compiled program on these arguments."""
        compiled = self.fn.lower(self.params, self.tokens).compile()
        return lambda: compiled(self.params, self.tokens)


def prepare_forward(params: Params, tokens: Any, config: ModelConfig, *,
                    layers: Iterable[int] | str | None = None, dtype: Any = jnp.bfloat16) -> ForwardProgram:
    """Check the arguments and build the jitted forward pass for them (nothing is compiled yet).

    Args and errors are those of :func:`forward`.
    """
    chosen = normalize_layers(layers, config)
    name = dtype_name(dtype)
    ids = _check_tokens(tokens, config)
    check_params(params, config, chosen)
    wanted = {spec.path for spec in select(layout(config), layers=chosen)}
    subset = {path: dict(params[path]) for path in sorted(wanted)}
    subset, placed_tokens, token_sharding = _placed(subset, ids)
    leaves, treedef = jax.tree_util.tree_flatten(subset)
    fn = _jitted(config, chosen, name, treedef, tuple(leaf.sharding for leaf in leaves), token_sharding)
    return ForwardProgram(fn=fn, params=subset, tokens=placed_tokens)


def forward(params: Params, tokens: Any, config: ModelConfig, *, layers: Iterable[int] | str | None = None,
            dtype: Any = jnp.bfloat16) -> jax.Array:
    """Logits of the Grok-1 architecture for a batch of token ids.

    Args:
        params: ``params[path][name]`` as :func:`grokweights.load` returns it, on any mesh or device
            (numpy leaves are placed on the first device). Only the requested layers are needed.
        tokens: [B, T] integer ids (any batch size); id 0 is padding and hidden from attention.
        config: the model's hyper-parameters.
        layers: the decoder layers to run, in increasing order (indices or ``"0-3,7"``); ``None`` runs all.
            The final norm and the unembedding are applied either way.
        dtype: compute dtype, ``jnp.bfloat16`` (as upstream) or ``jnp.float32`` (float32 throughout, with
            full-precision matmuls: for comparing implementations).

    Returns:
        [B, T, vocab_size] float32 logits, batch sharded over a ``data`` mesh axis when it divides B.

    Raises:
        UsageError: bad tokens, layers or dtype.
        LayoutMismatchError: a parameter is missing or has the wrong shape.
    """
    return prepare_forward(params, tokens, config, layers=layers, dtype=dtype)()


def abstract_params(config: ModelConfig, *, layers: Iterable[int] | str | None = None) -> Params:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves (nothing allocated), for ``jax.eval_shape``."""
    chosen = normalize_layers(layers, config)
    out: Params = {}
    for spec in select(layout(config), layers=chosen):
        weight = jax.ShapeDtypeStruct(spec.shape, jnp.dtype(spec.dtype))
        if spec.kind == "quantized":
            weight = QuantizedWeight(weight, jax.ShapeDtypeStruct(spec.scales_shape, jnp.dtype(spec.scales_dtype)))
        out.setdefault(spec.path, {})[spec.name] = weight
    return out


def forward_shape(config: ModelConfig, batch: int, length: int, *, layers: Iterable[int] | str | None = None,
                  dtype: Any = jnp.bfloat16) -> jax.ShapeDtypeStruct:
    """Trace the forward pass on abstract parameters of ``config`` with ``jax.eval_shape``: no memory used."""
    chosen = normalize_layers(layers, config)
    fn = functools.partial(_forward_impl, config=config, layers=chosen, dtype=jnp.dtype(dtype_name(dtype)))
    return jax.eval_shape(fn, abstract_params(config, layers=chosen),
                          jax.ShapeDtypeStruct((batch, length), jnp.int32))
