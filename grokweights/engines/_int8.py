"""Grok-1's own int8 weights as compressed-tensors ``pack-quantized`` safetensors (vLLM, SGLang), losslessly.

The engines' int8 weight-only path (vLLM's ``CompressedTensorsWNA16``, dense and fused MoE; SGLang's
compressed-tensors support) reads, per linear layer ``X``:

* ``X.weight_packed``: int32 ``(out, in / 4)``; each word holds four int8 values plus 128 (offset binary),
  element ``j`` of a row in byte ``j % 4`` of word ``j // 4``, little-endian: the bytes of a row are its
  int8 values with the top bit flipped;
* ``X.weight_scale``: bfloat16 ``(out, 1)`` (``channel``) or ``(out, in / group)`` (``group``);
* ``X.weight_shape``: int64 ``[out, in]``; symmetric, no zero point.

The release's values and bfloat16 scales fit exactly (``value * scale`` is the same product): one scale
block on the input axis is a channel scale; 8 blocks (the attention output, ``moe/linear_1``) are groups
of ``group`` rows (128 for Grok-1) with each block's scale repeated over its groups. vLLM's fused MoE takes
one scheme for all expert projections, so the gate and up projections of an expert use the same groups
(their single block repeated). Config groups are listed specific first (compressed-tensors applies the
first that matches; a ``Linear`` target matches every linear layer). The router and ``lm_head`` stay
unquantised (``ignore``): the engines build them without quantisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..checkpoint.config import ModelConfig
from ..checkpoint.dtypes import bfloat16
from ..errors import UsageError
from ._tensor import OutTensor

__all__ = ["int8_groups", "int8_parts", "quantization_config", "int8_tasks", "GROUP_SIZES"]

#: group sizes the int8 kernels take (vLLM's Marlin/Machete: 128 preferred, 64 and 32 also), largest first.
GROUP_SIZES = (128, 64, 32)
_DENSE = ("q", "k", "v", "o")
_EXPERT = ("gate", "up", "down")


def _pick(rows_per_block: int) -> int:
    """The largest kernel group size dividing ``rows_per_block`` (else ``rows_per_block`` itself)."""
    return next((g for g in GROUP_SIZES if rows_per_block % g == 0), rows_per_block)


def int8_groups(config: ModelConfig) -> dict[str, int]:
    """Input rows per scale for each matrix role (0: one scale per output channel).

    The attention output (input ``q_size``) and ``moe/linear_1`` (input ``ffn_size``) have
    ``config.scale_blocks`` blocks on their input axis; the other matrices one.
    """
    blocks = config.scale_blocks
    groups = {role: 0 for role in (*_DENSE, *_EXPERT)}
    if blocks > 1:
        groups["o"] = _pick(config.q_size // blocks)
        expert = _pick(math.gcd(config.emb_size, config.ffn_size // blocks))
        groups.update({role: expert for role in _EXPERT})
    return groups


def int8_parts(name: str, shape: tuple[int, int], source: str, *, expert: int | None, group: int) -> list[OutTensor]:
    """The three tensors of one int8 matrix ``name`` (``...weight``) of output ``shape`` ``(out, in)``."""
    base = name.removesuffix(".weight")
    out, inner = shape
    if inner % 4:
        raise UsageError(f"{name}: {inner} input values per row are not a whole number of int32 words",
                         expected="a multiple of 4", actual=inner)
    scale_cols = inner // group if group else 1
    return [OutTensor(f"{base}.weight_packed", (out, inner // 4), "i8pack", source, expert, True, "packed"),
            OutTensor(f"{base}.weight_scale", (out, scale_cols), "bf16", source, expert, True, "scale", group),
            OutTensor(f"{base}.weight_shape", (2,), "i64", source, expert, True, "shape")]


def _scheme(group: int, targets: list[str]) -> dict[str, Any]:
    weights = {"num_bits": 8, "type": "int", "symmetric": True, "dynamic": False, "actorder": None,
               "observer": "minmax", "strategy": "group" if group else "channel",
               "group_size": group or None, "block_structure": None}
    return {"targets": targets, "weights": weights, "input_activations": None, "output_activations": None,
            "format": "pack-quantized"}


def quantization_config(fmt: str, config: ModelConfig) -> dict[str, Any]:
    """The ``quantization_config`` of ``config.json`` for an int8 export in ``fmt`` (``sglang`` or ``hf``)."""
    groups = int8_groups(config)
    # the expert pattern also matches the names the engines probe for a fused MoE layer's scheme
    # (``<experts>.0.gate_proj`` / ``.up_proj`` / ``.down_proj``, in vLLM's and SGLang's get_moe_method)
    probe = "gate_proj|up_proj|down_proj"
    if fmt == "sglang":
        experts, out_proj, router = (rf"re:.*\.experts\.\d+\.(w1|w2|w3|{probe})$", r"re:.*\.self_attn\.o_proj$",
                                     r"re:.*\.block_sparse_moe\.gate$")
    else:
        experts, out_proj, router = (rf"re:.*\.experts\.\d+\.(linear|linear_v|linear_1|{probe})$",
                                     r"re:.*\.attn\.o_proj$", r"re:.*\.moe_block\.gate$")
    config_groups = {}
    if groups["gate"]:
        config_groups["group_0"] = _scheme(groups["gate"], [experts])
    if groups["o"]:
        config_groups[f"group_{len(config_groups)}"] = _scheme(groups["o"], [out_proj])
    config_groups[f"group_{len(config_groups)}"] = _scheme(0, ["Linear"])
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
            "config_groups": config_groups, "ignore": ["lm_head", router], "kv_cache_scheme": None,
            "sparsity_config": {}, "transform_config": {}, "global_compression_ratio": None}


def _scale_bytes(scales: np.ndarray, tensor: OutTensor) -> np.ndarray:
    """``weight_scale`` (out, in / group) or (out, 1) from the release's block scales ``(blocks, out)``."""
    blocks = scales.shape[0]
    if tensor.group:
        rows_per_block = tensor.shape[1] * tensor.group // blocks
        if rows_per_block % tensor.group:
            raise UsageError(f"{tensor.name}: groups of {tensor.group} rows cross the release's blocks of "
                             f"{rows_per_block}", expected=f"a divisor of {rows_per_block}", actual=tensor.group)
        index = np.arange(tensor.shape[1]) * tensor.group // rows_per_block
        values = scales[index].T
    elif blocks != 1:
        raise UsageError(f"{tensor.name}: {blocks} scale blocks need group scales", expected=1, actual=blocks)
    else:
        values = scales.T
    return np.ascontiguousarray(values, dtype=bfloat16()).reshape(-1).view(np.uint8)


def int8_tasks(weight: Callable[[], np.ndarray], scales: Callable[[], np.ndarray | None], shape: tuple[int, int],
               tensor: OutTensor, matrix_tasks: Callable[..., Iterator[Callable[[str], np.ndarray]]]
               ) -> Iterator[Callable[[str], np.ndarray]]:
    """Tasks for one part of an int8 matrix of source ``shape`` ``(in, out)``: ``weight()`` gives its int8 values,
    ``scales()`` its release block scales ``(blocks, out)`` (each read only by the part that needs it)."""
    rows, cols = shape
    if tensor.part == "packed":
        values = weight()
        if values.dtype != np.int8:
            raise UsageError(f"{tensor.source}: int8 export needs the release's int8 weights, found {values.dtype}",
                             expected="int8", actual=str(values.dtype))
        yield from matrix_tasks(values, None, True)
    elif tensor.part == "scale":
        blocks = scales()
        if blocks is None:
            raise UsageError(f"{tensor.source}: int8 export needs the release's scales, found none", expected="scales",
                             actual="none")
        yield lambda dtype: _scale_bytes(np.asarray(blocks), tensor)
    else:
        yield lambda dtype: np.array([cols, rows], np.int64).view(np.uint8)
