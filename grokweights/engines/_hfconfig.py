"""``config.json`` for the safetensors formats: every field the engines' Grok loaders read.

* ``sglang``: SGLang's ``Grok1ForCausalLM`` (sgl-project/sglang ``python/sglang/srt/models/grok.py``).
  ``model_type`` is ``git``, a type ``transformers.AutoConfig`` knows, as xAI's own SGLang-format release
  of Grok-2 does, so the file loads without remote code; the presharded-weight switches are off, so
  SGLang reads the plain files at any tensor-parallel size.
* ``hf``: the hpcai-tech ``Grok1ModelForCausalLM`` names that vLLM's ``grok1.py`` loads; ``model_type``
  ``grok-1`` with ``auto_map`` to hpcai-tech/grok-1's code on the hub, or to code files beside it (``_hfcode``).
"""

from __future__ import annotations

from typing import Any

from ..checkpoint.config import ModelConfig
from ._hfcode import auto_map

__all__ = ["config_json", "ROPE_THETA", "RMS_EPS", "CONTEXT_LENGTH", "ATTN_SOFTCAP"]

#: Grok-1's fixed hyper-parameters that are not in :class:`ModelConfig` (upstream model.py / run.py).
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
CONTEXT_LENGTH = 8192
ATTN_SOFTCAP = 30.0
_TORCH_DTYPE = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "int8": "bfloat16"}


def _common(config: ModelConfig, layers: int, dtype: str) -> dict[str, Any]:
    return {
        "vocab_size": config.vocab_size, "hidden_size": config.emb_size, "intermediate_size": config.ffn_size,
        "num_hidden_layers": layers, "num_attention_heads": config.num_q_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.key_size,
        "num_experts_per_tok": config.num_selected_experts, "rms_norm_eps": RMS_EPS, "rope_theta": ROPE_THETA,
        "max_position_embeddings": CONTEXT_LENGTH,
        "embedding_multiplier_scale": config.embedding_multiplier_scale,
        "output_multiplier_scale": config.output_multiplier_scale,
        "attn_output_multiplier": config.attn_output_multiplier, "attn_logit_softcapping": ATTN_SOFTCAP,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": _TORCH_DTYPE[dtype],
    }


def config_json(fmt: str, config: ModelConfig, layers: int, dtype: str, local_code: bool = False) -> dict[str, Any]:
    """The ``config.json`` of ``fmt`` (``sglang`` or ``hf``) for a ``layers``-layer export (``local_code``: the
    model code lies beside it, see ``_hfcode``)."""
    data = _common(config, layers, dtype)
    if fmt == "sglang":
        data.update({
            "architectures": ["Grok1ForCausalLM"], "model_type": "git",
            "num_local_experts": config.num_experts, "moe_intermediate_size": config.ffn_size,
            "residual_moe": False, "tie_word_embeddings": False,
            "load_presharded_moe": False, "load_presharded_attn": False, "load_presharded_mlp": False,
            "load_presharded_embedding": False, "replicate_lm_head": False, "replicate_embedding": False,
        })
    else:
        data.update({
            "architectures": ["Grok1ModelForCausalLM"], "model_type": "grok-1",
            "auto_map": auto_map(local_code),
            "num_experts": config.num_experts, "max_attn_value": ATTN_SOFTCAP, "tie_word_embeddings": True,
        })
    if dtype == "int8":
        from ._int8 import quantization_config

        data["quantization_config"] = quantization_config(fmt, config)
    return dict(sorted(data.items()))
