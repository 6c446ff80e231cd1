"""Make and complete manifests from local checkpoints: ``manifest create`` and ``manifest pin``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..constants import CKPT_DIRNAME
from ..errors import ManifestError, VerificationError
from .config import ModelConfig
from .hashing import hash_files
from .inspection import infer_config, scan_headers
from .layout import layout
from .manifest import Manifest, ShardEntry, Sources, load_manifest, save_manifest, with_hashes
from .paths import resolve_checkpoint_dir

__all__ = ["create_manifest", "pin_manifest"]

logger = logging.getLogger(__name__)


def create_manifest(checkpoint_dir: str | os.PathLike[str], *, name: str | None = None,
                    config: ModelConfig | None = None, sources: Sources | None = None, description: str = "",
                    jobs: int | None = None, progress: Callable[[int], None] | None = None) -> Manifest:
    """Hash a local checkpoint into a manifest (every shard's size and sha256, and the model config).

    Without ``config`` the shapes must determine it (a preset's shapes at any depth); otherwise a
    :class:`~grokweights.errors.ConfigError` names the fields to supply. Each file's header is checked
    against the layout first, so a manifest never records a malformed checkpoint.
    """
    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    headers = scan_headers(ckpt)
    if config is None:
        config, how = infer_config(headers)
        logger.info("model config: %s", how)
    specs = layout(config)
    for spec in specs:
        header = headers.get(spec.file)
        if header is None:
            raise VerificationError(f"{ckpt / spec.file}: missing; a {config.num_layers}-layer model needs "
                                    f"{len(specs)} files", path=str(ckpt / spec.file))
        if not hasattr(header, "parsed"):
            raise header  # type: ignore[misc]
        spec.require(header.parsed, where=str(ckpt / spec.file))
    extra = sorted(set(headers) - {s.file for s in specs})
    if extra:
        raise VerificationError(f"{ckpt}: unexpected files {', '.join(extra[:5])} for a {config.num_layers}-layer "
                                "model", path=str(ckpt), actual=extra)
    digests = hash_files([ckpt / s.file for s in specs], jobs=jobs, progress=progress)
    shards = []
    for spec in specs:
        digest = digests[os.fspath(ckpt / spec.file)]
        if isinstance(digest, OSError):
            raise VerificationError(f"{ckpt / spec.file}: cannot read ({digest})", path=str(ckpt / spec.file))
        shards.append(ShardEntry(f"{CKPT_DIRNAME}/{spec.file}", (ckpt / spec.file).stat().st_size, digest, spec))
    return Manifest(name=name or ckpt.parent.name, config=config, shards=tuple(shards),
                    sources=sources or Sources(), description=description)


def pin_manifest(checkpoint_dir: str | os.PathLike[str], manifest_path: str | os.PathLike[str], *,
                 output: str | os.PathLike[str] | None = None, jobs: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Manifest:
    """Fill the manifest's missing sha256 values from a copy the user trusts, and save it.

    Every shard must exist with the manifest's size; shards that already have a sha256 are re-hashed and
    must match: a hash already present is never changed. Writes to ``output`` (default: in place,
    atomically).
    """
    manifest = load_manifest(manifest_path)
    root = resolve_checkpoint_dir(checkpoint_dir).parent
    wrong = []
    for entry in manifest.shards:
        path = root / entry.path
        size = path.stat().st_size if path.exists() else None
        if size != entry.size:
            wrong.append(f"{entry.path} (expected {entry.size} bytes, found {size if size is not None else 'none'})")
    if wrong:
        raise VerificationError(f"{root}: cannot pin from this copy: {len(wrong)} shard(s) missing or of the "
                                f"wrong size: {'; '.join(wrong[:5])}", path=str(root), actual=wrong)
    digests = hash_files([root / e.path for e in manifest.shards], jobs=jobs, progress=progress)
    fresh: dict[str, str] = {}
    for entry in manifest.shards:
        digest = digests[os.fspath(root / entry.path)]
        if isinstance(digest, OSError):
            raise VerificationError(f"{root / entry.path}: cannot read ({digest})", path=str(root / entry.path))
        if entry.sha256 and entry.sha256 != digest:
            raise ManifestError(f"{root / entry.path}: sha256 {digest} differs from the manifest's {entry.sha256}; "
                                "refusing to change a recorded hash (this copy is not the one it describes)",
                                path=str(root / entry.path), expected=entry.sha256, actual=digest)
        fresh[entry.path] = digest
    pinned = with_hashes(manifest, fresh)
    target = Path(output) if output is not None else Path(manifest_path)
    save_manifest(replace(pinned, origin=str(target)), target)
    return replace(pinned, origin=str(target))
