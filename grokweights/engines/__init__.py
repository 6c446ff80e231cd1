"""Grok-1 for other engines: GGUF (llama.cpp) and safetensors (SGLang, vLLM); ``grokweights export``.

One tensor at a time, in bounded memory: each int8 weight is dequantised with its block scales, turned to
the ``(out, in)`` orientation the engines take, cast, and appended to the output; outputs are staged under
a hidden name and renamed when complete. ``docs/export.md`` lists every name map and every place where an
engine's forward differs from Grok-1's. Imports numpy (and ``gguf``/``safetensors`` when writing), never jax.

    >>> report = export("checkpoints", "grok-1.gguf", format="gguf", dtype="q8_0")
    >>> print(export("checkpoints", "out", format="sglang", dry_run=True).table)
"""

from __future__ import annotations

from ._plan import DTYPES, FORMATS, plan_tensors, render_table
from ._run import ExportReport, export, parse_size
from ._tensor import OutTensor

__all__ = ["export", "ExportReport", "OutTensor", "plan_tensors", "render_table", "parse_size", "FORMATS",
           "DTYPES"]
