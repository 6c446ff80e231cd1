"""The export plan: for each target format, every output tensor's name, shape, dtype and source.

Pure data, no reading: :func:`plan_tensors` maps the checkpoint's tensors (``layout(config)``) to the names
and orientation an engine's loader expects. Every weight matrix comes out as ``(out, in)`` — the transpose of
the release's ``(in, out)`` — because that is what ``torch.nn.Linear`` (SGLang, vLLM) and ggml's
``mul_mat`` (llama.cpp, ``ne = [in, out]``, i.e. numpy shape ``(out, in)``) both take.

Expert roles (established from the sources, proven by ``tests/test_export*.py``): upstream computes
``gelu(x @ moe/linear) * (x @ moe/linear_v)`` and then ``@ moe/linear_1``, so ``linear`` is the gate
(the GELU side), ``linear_v`` the up projection and ``linear_1`` the down projection.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..checkpoint.config import ModelConfig
from ..errors import UsageError
from ._int8 import int8_groups, int8_parts
from ._kquant import FTYPES
from ._tensor import Q8_BLOCK, OutTensor, tensor_bytes

__all__ = ["FORMATS", "DTYPES", "OutTensor", "plan_tensors", "tensor_bytes", "render_table", "Q8_BLOCK"]

#: the target formats.
FORMATS = ("gguf", "sglang", "hf")
#: output dtypes (``q8_0`` and llama.cpp's quantizer file types only for gguf; ``int8``, the release's int8 as
#: compressed-tensors, only for safetensors).
DTYPES = ("bf16", "f16", "f32", "q8_0", *FTYPES, "int8")
EMBED = "language_model/in_out_embed/embeddings"
FINAL_NORM = "language_model/rms_norm/scale"


def _weight_dtype(dtype: str, inner: int) -> str:
    """The dtype a weight matrix gets: q8_0 needs rows in whole blocks of 32, else bf16 (as llama.cpp's converter);
    for llama.cpp's quantizer, float32 until its own choice replaces it (``_kquant.choose_types``)."""
    if dtype in FTYPES:
        return "f32"
    if dtype == "q8_0" and inner % Q8_BLOCK:
        return "bf16"
    return dtype


# (checkpoint module under decoder_layer_N, param) -> role; roles are what each format names.
_LAYER_SOURCES = {
    "attn_norm": ("rms_norm", "scale"), "attn_out_norm": ("rms_norm_1", "scale"),
    "moe_norm": ("rms_norm_2", "scale"), "moe_out_norm": ("rms_norm_3", "scale"),
    "q": ("multi_head_attention/query", "w"), "k": ("multi_head_attention/key", "w"),
    "v": ("multi_head_attention/value", "w"), "o": ("multi_head_attention/linear", "w"),
    "router": ("router", "w"), "gate": ("moe/linear", "w"), "up": ("moe/linear_v", "w"),
    "down": ("moe/linear_1", "w"),
}

GGUF_NAMES = {
    "attn_norm": "attn_norm", "attn_out_norm": "attn_output_norm", "moe_norm": "ffn_norm",
    "moe_out_norm": "layer_output_norm", "q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output",
    "router": "ffn_gate_inp", "gate": "ffn_gate_exps", "up": "ffn_up_exps", "down": "ffn_down_exps",
}
SGLANG_NAMES = {
    "attn_norm": "pre_attn_norm.weight", "attn_out_norm": "post_attn_norm.weight",
    "moe_norm": "pre_moe_norm.weight", "moe_out_norm": "post_moe_norm.weight",
    "q": "self_attn.q_proj.weight", "k": "self_attn.k_proj.weight", "v": "self_attn.v_proj.weight",
    "o": "self_attn.o_proj.weight", "router": "block_sparse_moe.gate.weight",
    "gate": "block_sparse_moe.experts.{e}.w1.weight", "up": "block_sparse_moe.experts.{e}.w3.weight",
    "down": "block_sparse_moe.experts.{e}.w2.weight",
}
HF_NAMES = {
    "attn_norm": "pre_attn_norm.scale", "attn_out_norm": "post_attn_norm.scale",
    "moe_norm": "pre_moe_norm.scale", "moe_out_norm": "post_moe_norm.scale",
    "q": "attn.q_proj.weight", "k": "attn.k_proj.weight", "v": "attn.v_proj.weight", "o": "attn.o_proj.weight",
    "router": "moe_block.gate.weight", "gate": "moe_block.experts.{e}.linear.weight",
    "up": "moe_block.experts.{e}.linear_v.weight", "down": "moe_block.experts.{e}.linear_1.weight",
}
_NORMS = ("attn_norm", "attn_out_norm", "moe_norm", "moe_out_norm")
_MATRICES = ("q", "k", "v", "o")
_EXPERTS = ("gate", "up", "down")


def _role_shape(role: str, config: ModelConfig) -> tuple[int, ...]:
    """Output ``(out, in)`` shape of one role (one expert for the expert roles)."""
    d, f = config.emb_size, config.ffn_size
    return {
        "q": (config.q_size, d), "k": (config.kv_size, d), "v": (config.kv_size, d), "o": (d, config.q_size),
        "router": (config.num_experts, d), "gate": (f, d), "up": (f, d), "down": (d, f),
    }.get(role, (d,))


def _gguf_layer(i: int, out: int, config: ModelConfig, dtype: str) -> list[OutTensor]:
    pre = f"transformer/decoder_layer_{i}"
    tensors = []
    for role, (module, param) in _LAYER_SOURCES.items():
        shape = _role_shape(role, config)
        name = f"blk.{out}.{GGUF_NAMES[role]}.weight"
        if role in _NORMS or role == "router":  # norms and router stay F32, as llama.cpp's converter keeps them
            tensors.append(OutTensor(name, shape, "f32", f"{pre}/{module}/{param}", transpose=role == "router"))
        elif role in _EXPERTS:
            tensors.append(OutTensor(name, (config.num_experts, *shape), _weight_dtype(dtype, shape[-1]),
                                     f"{pre}/{module}/{param}", transpose=True))
        else:
            tensors.append(OutTensor(name, shape, _weight_dtype(dtype, shape[-1]), f"{pre}/{module}/{param}",
                                     transpose=True))
    return tensors


def _st_layer(i: int, out: int, config: ModelConfig, dtype: str, names: dict[str, str]) -> list[OutTensor]:
    pre = f"transformer/decoder_layer_{i}"
    tensors = []
    groups = int8_groups(config) if dtype == "int8" else {}
    for role, (module, param) in _LAYER_SOURCES.items():
        shape, source = _role_shape(role, config), f"{pre}/{module}/{param}"
        name = f"model.layers.{out}.{names[role]}"
        if role in groups:  # int8: each matrix as compressed-tensors parts
            for e in range(config.num_experts) if role in _EXPERTS else [None]:
                tensors += int8_parts(name.format(e=e), shape, source, expert=e, group=groups[role])
        elif role in _EXPERTS:
            tensors += [OutTensor(name.format(e=e), shape, dtype, source, expert=e, transpose=True)
                        for e in range(config.num_experts)]
        else:
            tensors.append(OutTensor(name, shape, dtype if role in _MATRICES else "f32", source,
                                     transpose=role not in _NORMS))
    return tensors


def plan_tensors(config: ModelConfig, fmt: str, dtype: str, layers: Iterable[int]) -> list[OutTensor]:
    """Every output tensor of ``fmt`` for the given checkpoint layers (renumbered from 0), in writing order.

    Raises:
        UsageError: unknown format or dtype, or ``q8_0`` for a safetensors format.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}",
                         expected=list(FORMATS), actual=fmt)
    if dtype not in DTYPES:
        raise UsageError(f"unknown export dtype {dtype!r}; choose one of {', '.join(DTYPES)}",
                         expected=list(DTYPES), actual=dtype)
    if dtype in FTYPES and fmt != "gguf":
        raise UsageError(f"dtype {dtype} is a llama.cpp quantisation (GGUF); --format {fmt} takes bf16, f16, f32 or "
                         "int8", expected=["bf16", "f16", "f32", "int8"], actual=dtype)
    if dtype == "q8_0" and fmt != "gguf":
        raise UsageError(f"dtype q8_0 is a GGUF block format; --format {fmt} takes bf16, f16, f32 or int8",
                         expected=["bf16", "f16", "f32", "int8"], actual=dtype)
    if dtype == "int8" and fmt == "gguf":
        raise UsageError("dtype int8 is compressed-tensors safetensors (--format sglang or hf); a GGUF takes "
                         "bf16, f16, f32 or a ggml type (q8_0 keeps 8 bits)", expected=["sglang", "hf"], actual=fmt)
    d, v = config.emb_size, config.vocab_size
    if fmt == "gguf":
        tensors = [OutTensor("token_embd.weight", (v, d), _weight_dtype(dtype, d), EMBED)]
        for out, i in enumerate(layers):
            tensors += _gguf_layer(i, out, config, dtype)
        return tensors + [OutTensor("output_norm.weight", (d,), "f32", FINAL_NORM)]
    names = SGLANG_NAMES if fmt == "sglang" else HF_NAMES
    dense = "bf16" if dtype == "int8" else dtype  # int8: the embedding and lm_head in the engines' bfloat16
    tensors = [OutTensor("model.embed_tokens.weight", (v, d), dense, EMBED)]
    for out, i in enumerate(layers):
        tensors += _st_layer(i, out, config, dtype, names)
    final = "model.norm.weight" if fmt == "sglang" else "model.norm.scale"
    tensors.append(OutTensor(final, (d,), "f32", FINAL_NORM))
    if fmt == "sglang":  # SGLang builds a separate lm_head (it scales it by output_multiplier_scale on load)
        tensors.append(OutTensor("lm_head.weight", (v, d), dense, EMBED))
    return tensors


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def render_table(tensors: list[OutTensor]) -> str:
    """The ``--dry-run`` table: name, shape, dtype, bytes, source; and the total."""
    width = max((len(t.name) for t in tensors), default=4)
    lines = [f"{'name':<{width}}  {'shape':<22} {'dtype':<5} {'bytes':>14}  source"]
    for t in tensors:
        source = t.source + (f"[{t.expert}]" if t.expert is not None else "") + (" (T)" if t.transpose else "")
        lines.append(f"{t.name:<{width}}  {str(list(t.shape)):<22} {t.dtype:<5} {t.nbytes:>14,}  {source}")
    total = sum(t.nbytes for t in tensors)
    lines.append(f"total: {len(tensors)} tensors, {total:,} bytes ({_human(total)})")
    return "\n".join(lines)
