"""The in-memory parameter tree shared by the loader and the model (imports jax).

Parameters are a haiku-style nested dict keyed by module path and param name, exactly as upstream::

    params["language_model/in_out_embed"]["embeddings"]      jax.Array (vocab, emb)
    params["transformer/decoder_layer_0/moe/linear"]["w"]    QuantizedWeight(weight=int8, scales=bf16)

``QuantizedWeight`` is a registered pytree node, so ``jax.tree_util`` and ``jax.jit`` see its two arrays.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["QuantizedWeight", "Params", "dequantize"]

Params = dict[str, dict[str, Any]]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["weight", "scales"], meta_fields=[])
@dataclass(frozen=True)
class QuantizedWeight:
    """An int8 weight and its block scales (``scales.shape[-2]`` row blocks on the input axis)."""

    weight: Any
    scales: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)

    def dequantize(self, dtype: Any = jnp.float32) -> jax.Array:
        return dequantize(self.weight, self.scales, dtype=dtype)


def dequantize(weight: Any, scales: Any, *, dtype: Any = jnp.float32) -> jax.Array:
    """``weight[..., i, o] * scales[..., i // (in / blocks), o]``, computed in ``dtype``.

    Works for any number of blocks and keeps the weight's sharding: the block axis is split out of the
    input axis with a reshape, never gathered.
    """
    *lead, rows, cols = weight.shape
    blocks = scales.shape[-2]
    if rows % blocks:
        raise ValueError(f"{blocks} scale blocks do not divide {rows} rows")
    w = weight.astype(dtype).reshape(*lead, blocks, rows // blocks, cols)
    s = scales.astype(dtype).reshape(*lead, blocks, 1, cols)
    return (w * s).reshape(*lead, rows, cols)
