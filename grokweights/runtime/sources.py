"""What a path given to ``load`` or ``smoke`` is, decided in one place for every command:
:func:`grokweights.checkpoint.paths.source_kind` (re-exported here for the runtime's modules)."""

from __future__ import annotations

from ..checkpoint.paths import CHECKPOINT, STORE, source_kind

__all__ = ["source_kind", "STORE", "CHECKPOINT"]
