"""The Grok-1 forward pass in JAX, and its tokenizer.

:mod:`.params` (the parameter pytree, ``QuantizedWeight``), :mod:`.layers` (norms, RoPE, attention),
:mod:`.moe` (routing and experts), :mod:`.transformer` (``forward``, ``prepare_forward``, ``forward_shape``),
:mod:`.tokenizer` (SentencePiece; no jax). jax is imported on first use of a name that needs it, so the
tokenizer can be used (and the CPU device count set) before jax starts.
"""

from __future__ import annotations

from .._lazy import lazy_names

#: public name -> module defining it (imported on first use).
_NAMES = {"forward": "transformer", "prepare_forward": "transformer", "forward_shape": "transformer",
          "abstract_params": "transformer", "Params": "params", "QuantizedWeight": "params", "Tokenizer": "tokenizer"}

__all__ = list(_NAMES)

__getattr__ = lazy_names(__name__, _NAMES)
