"""Building blocks of the Grok-1 decoder: RMSNorm, linear layers over int8 weights, RoPE, attention.

Shapes use these letters::

    B batch, T query positions, S key positions, D model width (emb_size),
    K kv heads, G query heads per kv head, H = K * G query heads, d head width (key_size)

Every function takes the compute ``dtype`` (bfloat16 or float32) and the matmul ``precision``; the
float32 parts of the upstream model (norm statistics, rotary phases, attention logits and softmax)
stay float32 whatever ``dtype`` is.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..checkpoint.config import ModelConfig
from .params import QuantizedWeight, dequantize

__all__ = ["RMS_EPS", "ROPE_BASE", "SOFTCAP", "MASK_VALUE", "rms_norm", "weight_as", "linear", "rope",
           "attention_mask", "attention"]

#: epsilon inside the RMSNorm square root.
RMS_EPS = 1e-5
#: base of the rotary frequencies.
ROPE_BASE = 10000.0
#: attention logits are soft-capped to ``SOFTCAP * tanh(logits / SOFTCAP)``.
SOFTCAP = 30.0
#: logit given to masked keys (as upstream; a fully masked row becomes uniform, never NaN).
MASK_VALUE = -1e30


def rms_norm(x: jax.Array, scale: jax.Array, dtype: Any) -> jax.Array:
    """``x * rsqrt(mean(x^2) + eps) * scale`` over the last axis, computed in float32, returned as ``dtype``."""
    x32 = x.astype(jnp.float32)
    mean_sq = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    return (x32 * jax.lax.rsqrt(mean_sq + RMS_EPS) * scale.astype(jnp.float32)).astype(dtype)


def weight_as(w: Any, dtype: Any) -> jax.Array:
    """A weight in ``dtype``: int8 weights are dequantised with their block scales (any number of blocks)."""
    if isinstance(w, QuantizedWeight):
        return dequantize(w.weight, w.scales, dtype=dtype)
    return w.astype(dtype)


def linear(x: jax.Array, w: Any, dtype: Any, precision: Any) -> jax.Array:
    """``x @ w`` without bias: [..., I] x [I, O] -> [..., O]."""
    return jnp.einsum("...i,io->...o", x, weight_as(w, dtype), precision=precision)


def _rotate_half(x: jax.Array) -> jax.Array:
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-second, first], axis=-1)


def rope(x: jax.Array) -> jax.Array:
    """Rotary position embedding, rotate-half convention, positions 0..T-1: [B, T, N, d] -> same shape.

    Dimension ``i`` pairs with ``i + d/2`` and both turn by ``position / ROPE_BASE ** (2i / d)``.
    """
    _, t, _, d = x.shape
    inv_freq = 1.0 / (ROPE_BASE ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))  # [d/2]
    phase = jnp.arange(t, dtype=jnp.float32)[:, None] * inv_freq[None, :]  # [T, d/2]
    phase = jnp.concatenate([phase, phase], axis=-1)[None, :, None, :]  # [1, T, 1, d]
    x32 = x.astype(jnp.float32)
    return (x32 * jnp.cos(phase) + _rotate_half(x32) * jnp.sin(phase)).astype(x.dtype)


def attention_mask(tokens: jax.Array, pad_token: int = 0) -> jax.Array:
    """[B, T] token ids -> [B, T, S] booleans: causal, and keys whose id is ``<= pad_token`` hidden."""
    t = tokens.shape[1]
    causal = jnp.tril(jnp.ones((t, t), dtype=jnp.bool_))  # [T, S]
    keep = tokens > pad_token  # [B, S]
    return causal[None, :, :] & keep[:, None, :]


def attention(x: jax.Array, p: dict[str, Any], mask: jax.Array, config: ModelConfig, dtype: Any,
              precision: Any) -> jax.Array:
    """Grouped-query self-attention with RoPE and the 30·tanh soft-cap: [B, T, D] -> [B, T, D].

    Args:
        x: normed input, [B, T, D] in ``dtype``.
        p: ``{"query", "key", "value", "linear"}`` -> weight (plain or :class:`QuantizedWeight`).
        mask: [B, T, S] booleans from :func:`attention_mask`.
        config: the model's hyper-parameters.
        dtype: compute dtype.
        precision: matmul precision.
    """
    b, t, _ = x.shape
    k_heads, d = config.num_kv_heads, config.key_size
    g = config.num_q_heads // k_heads
    q = rope(linear(x, p["query"], dtype, precision).reshape(b, t, k_heads * g, d))  # [B, T, H, d]
    k = rope(linear(x, p["key"], dtype, precision).reshape(b, t, k_heads, d))  # [B, S, K, d]
    v = linear(x, p["value"], dtype, precision).reshape(b, t, k_heads, d)  # [B, S, K, d]
    q = q.reshape(b, t, k_heads, g, d)  # query head h = kv head h // G, member h % G
    logits = jnp.einsum("btkgd,bskd->bkgts", q, k, precision=precision).astype(jnp.float32)
    logits = logits * config.attn_output_multiplier
    logits = SOFTCAP * jnp.tanh(logits / SOFTCAP)
    logits = jnp.where(mask[:, None, None, :, :], logits, MASK_VALUE)  # [B, K, G, T, S]
    weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", weights, v, precision=precision)  # [B, T, K, G, d]
    return linear(out.reshape(b, t, k_heads * g * d), p["linear"], dtype, precision)  # [B, T, D]
