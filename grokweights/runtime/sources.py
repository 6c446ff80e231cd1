"""What a path given to ``load`` or ``smoke`` is: a resharded store, or an official checkpoint folder.

The one detector both use: a remote tensorstore URL or a folder holding the store index is a store; a
folder in which a checkpoint can be found (``ckpt-0/``, or shard files) is a checkpoint; anything else is
treated as a store, so that opening it explains what is missing (no index: not a store, or a reshard that
has not finished).
"""

from __future__ import annotations

import os

from ..checkpoint.paths import resolve_checkpoint_dir
from ..constants import CKPT_DIRNAME, STORE_INDEX_NAME
from ..errors import GrokWeightsError

__all__ = ["source_kind", "STORE", "CHECKPOINT"]

STORE = "store"
CHECKPOINT = CKPT_DIRNAME


def source_kind(path: str | os.PathLike[str]) -> str:
    """``"store"`` or ``"ckpt-0"`` for ``path`` (see the module docstring)."""
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        return STORE
    if os.path.isfile(os.path.join(text, STORE_INDEX_NAME)):
        return STORE
    try:
        resolve_checkpoint_dir(text)
    except GrokWeightsError:
        return STORE
    return CHECKPOINT
