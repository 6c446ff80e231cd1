"""Grok-1 for other engines: GGUF (llama.cpp) and safetensors (SGLang, vLLM); ``grokweights export``.

One tensor at a time, in bounded memory, from ``ckpt-0/`` or from a store: each int8 weight is dequantised
with its block scales (or, for ``int8``, kept as compressed-tensors ``pack-quantized``), turned to the
``(out, in)`` orientation the engines take, cast or quantised (``q4_k_m`` ...: llama.cpp's own quantizer),
and appended to the output; outputs are staged under a hidden name and renamed when complete.
``docs/export.md`` lists every name map and every place where an engine's forward differs from Grok-1's.
Imports numpy (and ``gguf``/``safetensors`` when writing; ``llama_cpp`` for its quantizer), never jax.

    >>> report = export("checkpoints", "grok-1.gguf", format="gguf", dtype="q4_k_m")
    >>> report = export("grok-1-store", "grok-1-int8", format="sglang", dtype="int8")
    >>> print(export("checkpoints", "out", format="sglang", dry_run=True).table)
"""

from __future__ import annotations

from ._plan import DTYPES, FORMATS, plan_tensors, render_table
from ._run import ExportReport, export, parse_size
from ._tensor import OutTensor

__all__ = ["export", "ExportReport", "OutTensor", "plan_tensors", "render_table", "parse_size", "FORMATS",
           "DTYPES"]
