"""The Grok-1 mixture of experts: float32 router, top-k gates, experts computed only for routed tokens.

Routing: ``probs = softmax(x @ router_w)`` over all experts in float32; each token takes its top-k
probabilities as gates, *not* renormalised (they sum to less than 1), as upstream.

Expert e: ``(gelu_tanh(x @ linear[e]) * (x @ linear_v[e])) @ linear_1[e]``; the layer's output is
``sum_k gate_k * expert_{e_k}(x)``.

How the experts run (exact, static shapes, any mesh). Upstream multiplies every token by every expert
and then picks the chosen rows with a one-hot (``E/k`` times the necessary work, and only for exactly 8
experts). Here the ``M = N * k`` (token, expert) assignments are sorted by expert (stable), so each
expert's tokens are one contiguous run of the sorted rows. A loop over experts dequantises one expert's
three weights at a time; an inner loop walks that expert's run in tiles of ``R`` rows (``R`` static, the
trip count ``ceil(count_e / R)`` dynamic), so an expert nobody chose costs nothing and each routed row
is computed once, plus at most ``R - 1`` padding rows per expert. With ``R`` about ``M / E`` that is
under ``2 M`` rows, against ``E / k * M`` for the dense formulation. Results are written back into the
sorted buffer, un-sorted with the inverse permutation to ``[N, k, D]`` and summed with the gates in a
fixed order, so the result does not depend on the tile size or on the mesh.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..checkpoint.config import ModelConfig
from .layers import weight_as
from .params import QuantizedWeight

__all__ = ["route", "moe", "tile_rows", "MAX_TILE_ROWS"]

#: upper bound of the tile height ``R`` of the expert loop.
MAX_TILE_ROWS = 128


def tile_rows(assignments: int, experts: int) -> int:
    """Static tile height: the power of two at most ``assignments / experts``, within [1, MAX_TILE_ROWS].

    At most ``R - 1`` rows per expert are padding, so the work stays below ``2 * assignments`` rows.
    """
    target = max(1, assignments // experts)
    return min(MAX_TILE_ROWS, 1 << (target.bit_length() - 1))


def route(x: jax.Array, router_w: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Top-k routing in float32: [N, D] -> gates [N, k] (float32, not renormalised), experts [N, k] int32."""
    logits = jnp.einsum("nd,de->ne", x.astype(jnp.float32), router_w.astype(jnp.float32),
                        precision=jax.lax.Precision.HIGHEST)
    probs = jax.nn.softmax(logits, axis=-1)
    gates, experts = jax.lax.top_k(probs, k)  # ties go to the lower expert index
    return gates, experts.astype(jnp.int32)


def _expert_slice(w: Any, e: jax.Array, dtype: Any) -> jax.Array:
    """Expert ``e`` of a stacked [E, I, O] weight, dequantised: [I, O]."""
    if isinstance(w, QuantizedWeight):
        w = QuantizedWeight(jax.lax.dynamic_index_in_dim(w.weight, e, 0, keepdims=False),
                            jax.lax.dynamic_index_in_dim(w.scales, e, 0, keepdims=False))
    else:
        w = jax.lax.dynamic_index_in_dim(w, e, 0, keepdims=False)
    return weight_as(w, dtype)


def _grouped_experts(x: jax.Array, experts: jax.Array, p: dict[str, Any], num_experts: int, dtype: Any,
                     precision: Any) -> jax.Array:
    """Ungated expert outputs for every assignment: x [N, D], experts [N, k] -> [N, k, D]."""
    n, d = x.shape
    k = experts.shape[1]
    m = n * k
    rows = tile_rows(m, num_experts)
    flat = experts.reshape(m)
    order = jnp.argsort(flat, stable=True)  # sorted position -> assignment
    counts = jnp.bincount(flat, length=num_experts)  # [E]
    starts = jnp.cumsum(counts) - counts  # first sorted row of each expert
    xs = jnp.concatenate([x[order // k], jnp.zeros((rows, d), x.dtype)])  # [M + R, D]

    def per_expert(e: jax.Array, out: jax.Array) -> jax.Array:
        w_in = _expert_slice(p["linear"], e, dtype)  # [D, F]
        w_gate = _expert_slice(p["linear_v"], e, dtype)  # [D, F]
        w_out = _expert_slice(p["linear_1"], e, dtype)  # [F, D]

        def per_tile(i: jax.Array, out: jax.Array) -> jax.Array:
            start = starts[e] + i * rows
            xt = jax.lax.dynamic_slice_in_dim(xs, start, rows)  # [R, D]
            h = jax.nn.gelu(jnp.dot(xt, w_in, precision=precision), approximate=True)
            h = h * jnp.dot(xt, w_gate, precision=precision)  # [R, F]
            y = jnp.dot(h, w_out, precision=precision)  # [R, D]
            valid = (i * rows + jnp.arange(rows) < counts[e])[:, None]
            kept = jax.lax.dynamic_slice_in_dim(out, start, rows)
            return jax.lax.dynamic_update_slice_in_dim(out, jnp.where(valid, y, kept), start, 0)

        return jax.lax.fori_loop(0, (counts[e] + rows - 1) // rows, per_tile, out)

    out = jax.lax.fori_loop(0, num_experts, per_expert, jnp.zeros((m + rows, d), dtype))
    inverse = jnp.zeros((m,), jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
    return out[inverse].reshape(n, k, d)


def moe(x: jax.Array, p: dict[str, Any], config: ModelConfig, dtype: Any, precision: Any) -> jax.Array:
    """The MoE block: [B, T, D] -> [B, T, D].

    Args:
        x: normed input in ``dtype``.
        p: ``{"router", "linear", "linear_v", "linear_1"}`` -> weight; the expert weights are stacked
            [E, D, F] / [E, F, D], plain or :class:`QuantizedWeight`.
        config: the model's hyper-parameters.
        dtype: compute dtype.
        precision: matmul precision of the experts.
    """
    b, t, d = x.shape
    flat = x.reshape(b * t, d)  # [N, D]
    gates, experts = route(flat, p["router"], config.num_selected_experts)  # [N, k]
    ys = _grouped_experts(flat, experts, p, config.num_experts, dtype, precision)  # [N, k, D]
    out = jnp.sum(gates.astype(dtype)[:, :, None] * ys, axis=1)  # [N, D]
    return out.reshape(b, t, d)
