"""Where a checkpoint's files are: the ``ckpt-0`` folder and its shard files.

Accepted layouts (either path works)::

    DIR/                      <- the folder holding ckpt-0/ (fetch --dest/<torrent name>, synth --out)
        grokweights-manifest.json
        ckpt-0/               <- or ckpt-0/ itself
            tensor00000_000
            ...
    DIR/                      <- or a bare folder of shard files under another name
        tensor00000_000 ...
"""

from __future__ import annotations

import os
from pathlib import Path

from ..constants import CKPT_DIRNAME, SHARD_GLOB, SHARD_RE, STORE_INDEX_NAME, STORE_LOCK_NAME
from ..errors import GrokWeightsError

__all__ = ["resolve_checkpoint_dir", "shard_files", "checkpoint_bytes", "source_kind", "STORE", "CHECKPOINT"]

STORE = "store"
CHECKPOINT = CKPT_DIRNAME


def resolve_checkpoint_dir(path: str | os.PathLike[str]) -> Path:
    """The folder of shard files: ``path/ckpt-0``, ``path`` itself when it is ``ckpt-0`` or holds shards."""
    path = Path(path)
    if (path / CKPT_DIRNAME).is_dir():
        return path / CKPT_DIRNAME
    if path.name == CKPT_DIRNAME and path.is_dir():
        return path
    if path.is_dir() and any(path.glob(SHARD_GLOB)):
        return path
    raise GrokWeightsError(f"{path}: no checkpoint here (expected {path / CKPT_DIRNAME}/ or a {CKPT_DIRNAME}/ "
                           f"folder of {SHARD_GLOB} files)", path=str(path), expected=CKPT_DIRNAME)


def shard_files(ckpt: Path) -> list[Path]:
    """The shard files of a ``ckpt-0`` folder (names matching the release's pattern), sorted by name."""
    return sorted(p for p in ckpt.iterdir() if SHARD_RE.fullmatch(p.name))


def checkpoint_bytes(path: str | os.PathLike[str]) -> int:
    """Total size of the shard files of the checkpoint at ``path`` (any layout that resolves)."""
    return sum(p.stat().st_size for p in shard_files(resolve_checkpoint_dir(path)))


def source_kind(path: str | os.PathLike[str]) -> str:
    """``"store"`` or ``"ckpt-0"``: the one answer to "is this a resharded store or an official checkpoint?"
    (``load``, ``smoke``, ``verify`` and ``export`` all ask it).

    A remote tensorstore URL is a store; so is a folder holding the store index, or one a reshard has begun
    (its lock file or array folders: opening it then says the reshard has not finished). A folder in which a
    checkpoint can be found (``ckpt-0/``, or shard files) is a checkpoint. Anything else is treated as a store,
    so that opening it explains what is missing. Only the file system is looked at (no store package import).
    """
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        return STORE
    if any(os.path.lexists(os.path.join(text, name))
           for name in (STORE_INDEX_NAME, STORE_LOCK_NAME, "language_model", "transformer")):
        return STORE
    try:
        resolve_checkpoint_dir(text)
    except GrokWeightsError:
        return STORE
    return CHECKPOINT
