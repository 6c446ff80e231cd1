"""Grok-1 for ``transformers`` (written by grokweights; copied beside an ``export --format hf --hf-code local``).

Reads the hpcai-tech weight names the export writes (``model.layers.N.attn.q_proj.weight``,
``moe_block.experts.E.linear{,_v,_1}.weight``, ``*_norm.scale``) and computes upstream Grok-1
(xai-org/grok-1 ``model.py``): embeddings times ``embedding_multiplier_scale``; per layer RMSNorm around
attention and around the MoE; rotate-half RoPE; scores times ``attn_output_multiplier`` soft-capped at
``max_attn_value``; the router's softmax over all experts, the top ``num_experts_per_tok`` kept with their
probabilities (not renormalised); ``gelu_tanh(x W_linear) * (x W_linear_v)`` then ``W_linear_1``; logits
from the tied embedding times ``output_multiplier_scale``. Norms, router and softmaxes in float32. It keeps
no KV cache: every call runs the whole sequence (enough to check an export; serve with vLLM or SGLang).
"""

import math

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_grok1 import Grok1Config


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * self.scale.float()).to(x.dtype)


def _rotate(x, theta):
    """Rotate-half RoPE on ``x`` [batch, seq, heads, dim]."""
    seq, dim = x.shape[1], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=x.device) / dim)
    phase = torch.arange(seq, dtype=torch.float64, device=x.device)[:, None] * inv[None, :]
    phase = torch.cat([phase, phase], -1)[None, :, None, :]
    half = torch.cat([-x[..., dim // 2:], x[..., : dim // 2]], -1)
    return (x * phase.cos().to(x.dtype) + half * phase.sin().to(x.dtype))


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.hidden_size, c.num_attention_heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden_size, c.num_key_value_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.num_attention_heads * c.head_dim, c.hidden_size, bias=False)

    def forward(self, x, keep):
        c, (b, t, _) = self.c, x.shape
        q = _rotate(self.q_proj(x).view(b, t, c.num_attention_heads, c.head_dim), c.rope_theta)
        k = _rotate(self.k_proj(x).view(b, t, c.num_key_value_heads, c.head_dim), c.rope_theta)
        v = self.v_proj(x).view(b, t, c.num_key_value_heads, c.head_dim)
        group = c.num_attention_heads // c.num_key_value_heads  # query head h reads key/value head h // group
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
        scores = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * c.attn_output_multiplier
        scores = c.max_attn_value * torch.tanh(scores / c.max_attn_value)
        scores = scores.masked_fill(~keep, torch.finfo(torch.float32).min)
        probs = scores.softmax(-1)
        out = torch.einsum("bhts,bshd->bthd", probs, v.float()).to(x.dtype).reshape(b, t, -1)
        return self.o_proj(out)


class Expert(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.linear = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)  # the GELU (gate) side
        self.linear_v = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.linear_1 = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return self.linear_1(nn.functional.gelu(self.linear(x), approximate="tanh") * self.linear_v(x))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.top = c.num_experts_per_tok
        self.gate = nn.Linear(c.hidden_size, c.num_experts, bias=False)
        self.experts = nn.ModuleList(Expert(c) for _ in range(c.num_experts))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        probs = (flat.float() @ self.gate.weight.float().T).softmax(-1)
        weights, chosen = probs.topk(self.top, dim=-1)
        out = torch.zeros_like(flat, dtype=torch.float32)
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]).float() * weights[rows, slot, None])
        return out.to(x.dtype).reshape(x.shape)


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn = Attention(c)
        self.moe_block = MoE(c)
        self.pre_attn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attn_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.pre_moe_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_moe_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, h, keep):
        h = h + self.post_attn_norm(self.attn(self.pre_attn_norm(h), keep))
        return h + self.post_moe_norm(self.moe_block(self.pre_moe_norm(h)))


class Grok1Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class Grok1ModelForCausalLM(PreTrainedModel, GenerationMixin):
    """Grok-1 with hpcai-tech's parameter names; ``forward`` returns the logits of every position."""

    config_class = Grok1Config
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = Grok1Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=1 / math.sqrt(self.config.hidden_size))
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.scale)

    def forward(self, input_ids, attention_mask=None, **kwargs):
        c, t = self.config, input_ids.shape[1]
        keep = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril()[None, None]
        if attention_mask is not None:  # padding: keys the mask leaves out are not attended to
            keep = keep & attention_mask.bool()[:, None, None, :]
        h = self.model.embed_tokens(input_ids) * c.embedding_multiplier_scale
        for layer in self.model.layers:
            h = layer(h, keep)
        logits = self.lm_head(self.model.norm(h)).float() * c.output_multiplier_scale
        return CausalLMOutput(logits=logits)
