"""A numpy Grok-1 forward that reads only exported tensors, by the target's names, in (out, in) orientation.

It knows nothing of the checkpoint: ``weight(role, layer, expert)`` returns the exported array for a role,
so agreement with ``grokweights.forward`` proves each name, each transpose, the expert order and the
gate/up/down assignment of an export.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from grokweights.checkpoint.config import ModelConfig, preset

RMS_EPS, ROPE_BASE, SOFTCAP = 1e-5, 10000.0, 30.0

#: the tiny preset's structure (8 experts top-2, grouped-query attention) with 4 scale blocks.
TINY4 = dataclasses.replace(preset("tiny"), scale_blocks=4)

Weight = Callable[..., np.ndarray]

SGLANG_ROLES = {
    "embed": "model.embed_tokens.weight", "final_norm": "model.norm.weight", "lm_head": "lm_head.weight",
    "attn_norm": "model.layers.{i}.pre_attn_norm.weight", "attn_out_norm": "model.layers.{i}.post_attn_norm.weight",
    "moe_norm": "model.layers.{i}.pre_moe_norm.weight", "moe_out_norm": "model.layers.{i}.post_moe_norm.weight",
    "q": "model.layers.{i}.self_attn.q_proj.weight", "k": "model.layers.{i}.self_attn.k_proj.weight",
    "v": "model.layers.{i}.self_attn.v_proj.weight", "o": "model.layers.{i}.self_attn.o_proj.weight",
    "router": "model.layers.{i}.block_sparse_moe.gate.weight",
    "gate": "model.layers.{i}.block_sparse_moe.experts.{e}.w1.weight",
    "up": "model.layers.{i}.block_sparse_moe.experts.{e}.w3.weight",
    "down": "model.layers.{i}.block_sparse_moe.experts.{e}.w2.weight",
}
HF_ROLES = {
    "embed": "model.embed_tokens.weight", "final_norm": "model.norm.scale", "lm_head": "model.embed_tokens.weight",
    "attn_norm": "model.layers.{i}.pre_attn_norm.scale", "attn_out_norm": "model.layers.{i}.post_attn_norm.scale",
    "moe_norm": "model.layers.{i}.pre_moe_norm.scale", "moe_out_norm": "model.layers.{i}.post_moe_norm.scale",
    "q": "model.layers.{i}.attn.q_proj.weight", "k": "model.layers.{i}.attn.k_proj.weight",
    "v": "model.layers.{i}.attn.v_proj.weight", "o": "model.layers.{i}.attn.o_proj.weight",
    "router": "model.layers.{i}.moe_block.gate.weight",
    "gate": "model.layers.{i}.moe_block.experts.{e}.linear.weight",
    "up": "model.layers.{i}.moe_block.experts.{e}.linear_v.weight",
    "down": "model.layers.{i}.moe_block.experts.{e}.linear_1.weight",
}


def by_names(tensors: dict[str, np.ndarray], roles: dict[str, str]) -> Weight:
    """``weight(role, i, e)`` over a dict of exported tensors and a role -> name-pattern table."""
    return lambda role, i=None, e=None: np.asarray(tensors[roles[role].format(i=i, e=e)], dtype=np.float64)


def _rms(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * scale


def _rope(x: np.ndarray) -> np.ndarray:
    t, d = x.shape[1], x.shape[-1]
    inv = 1.0 / ROPE_BASE ** (np.arange(0, d, 2) / d)
    phase = np.arange(t)[:, None] * inv[None, :]
    phase = np.concatenate([phase, phase], -1)[None, :, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * np.cos(phase) + rot * np.sin(phase)


def _attention(x: np.ndarray, tokens: np.ndarray, w: Weight, i: int, c: ModelConfig) -> np.ndarray:
    b, t, _ = x.shape
    q = _rope((x @ w("q", i).T).reshape(b, t, c.num_q_heads, c.key_size))
    k = _rope((x @ w("k", i).T).reshape(b, t, c.num_kv_heads, c.key_size))
    v = (x @ w("v", i).T).reshape(b, t, c.num_kv_heads, c.key_size)
    group = c.num_q_heads // c.num_kv_heads
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)  # query head h reads kv head h // group
    logits = np.einsum("bthd,bshd->bhts", q, k) * c.attn_output_multiplier
    logits = SOFTCAP * np.tanh(logits / SOFTCAP)
    keep = np.tril(np.ones((t, t), bool))[None, None] & (tokens > 0)[:, None, None, :]
    logits = np.where(keep, logits, -1e30)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshd->bthd", probs, v).reshape(b, t, -1)
    return out @ w("o", i).T


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _moe(x: np.ndarray, w: Weight, i: int, c: ModelConfig) -> np.ndarray:
    flat = x.reshape(-1, x.shape[-1])
    logits = flat @ w("router", i).T
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    chosen = np.argsort(-probs, axis=-1, kind="stable")[:, : c.num_selected_experts]
    out = np.zeros_like(flat)
    for n in range(flat.shape[0]):
        for e in chosen[n]:
            h = _gelu(flat[n] @ w("gate", i, e).T) * (flat[n] @ w("up", i, e).T)  # gelu side = gate
            out[n] += probs[n, e] * (h @ w("down", i, e).T)
    return out.reshape(x.shape)


def reference_forward(tokens: np.ndarray, config: ModelConfig, w: Weight, num_layers: int) -> np.ndarray:
    """Grok-1 logits [B, T, V] (float64) from exported tensors."""
    h = w("embed")[tokens] * config.embedding_multiplier_scale
    for i in range(num_layers):
        h = h + _rms(_attention(_rms(h, w("attn_norm", i)), tokens, w, i, config), w("attn_out_norm", i))
        h = h + _rms(_moe(_rms(h, w("moe_norm", i)), w, i, config), w("moe_out_norm", i))
    return (_rms(h, w("final_norm")) @ w("lm_head").T) * config.output_multiplier_scale


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """``|a - b| / |b|`` over all elements."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
