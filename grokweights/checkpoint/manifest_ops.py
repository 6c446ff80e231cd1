"""Make and complete manifests: ``manifest create``, and ``manifest pin`` from a copy, the torrent or the hub."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..constants import CKPT_DIRNAME
from ..errors import ManifestError, VerificationError
from .config import ModelConfig
from .files import check_output as check_file_output
from .hashing import hash_files
from .inspection import infer_config, scan_headers
from .layout import layout
from .manifest import Manifest, ShardEntry, Sources, load_manifest, save_manifest, with_hashes
from .paths import resolve_checkpoint_dir

__all__ = ["check_output", "create_manifest", "pin_manifest", "pin_from_torrent", "pin_from_hub", "proven_pins",
           "PinReport"]

logger = logging.getLogger(__name__)


def check_output(output: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Refuse a manifest output in a checkpoint's folder (a shard above all), one that exists (unless ``force``)
    and anything but a regular file (see :func:`.files.check_output`)."""
    return Path(check_file_output(output, force=force, option="-o", what="a manifest"))


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


@dataclass(frozen=True)
class PinReport:
    """What a pin from the torrent or the hub recorded, and what it could not.

    Attributes:
        manifest: the manifest as saved.
        source: the provenance recorded beside each pinned hash (``torrent:<infohash>``, ``hub:<repo>@<commit>``).
        pinned: shard path -> sha256 recorded (or confirmed) from ``source``.
        failed: one line per shard that failed (not pinned): path, what, expected and found.
        unverified: one line per shard that could not be proven (not pinned), with the reason.
    """

    manifest: Manifest
    source: str
    pinned: dict[str, str]
    failed: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "manifest": self.manifest.origin, "source": self.source,
                "pinned": len(self.pinned), "failed": self.failed, "unverified": self.unverified}


def _save_pins(manifest: Manifest, pins: dict[str, str], source: str, target: Path) -> Manifest:
    pinned = replace(with_hashes(manifest, pins, source=source), origin=str(target))
    save_manifest(pinned, target)
    return pinned


def proven_pins(report: Any) -> dict[str, str]:
    """Shard path -> sha256 for every shard a :class:`~grokweights.checkpoint.verify.VerifyReport` proved
    by the torrent's pieces (its sha256 was taken in the same read)."""
    return {r.path: r.sha256 for r in report.results if r.status == "ok" and "pieces" in (r.method or "") and r.sha256}


def pin_from_torrent(checkpoint_dir: str | os.PathLike[str], manifest_path: str | os.PathLike[str],
                     torrent: str | os.PathLike[str], *, output: str | os.PathLike[str] | None = None,
                     progress: Callable[[int], None] | None = None) -> PinReport:
    """Pin the sha256 of every shard whose pieces all pass, hashed in the same read, from a local copy.

    The torrent's infohash must be the manifest's ``sources.infohash_v1``. Each pinned hash is recorded
    with ``sha256_source: "torrent:<infohash>"``. Shards that fail (pieces, or a recorded sha256 that
    differs) or cannot be proven (a neighbour absent) are listed and not pinned. Writes ``output``
    (default: the manifest, in place) with what was pinned.
    """
    from .verify import verify

    manifest = load_manifest(manifest_path)
    report = verify(checkpoint_dir, manifest, torrent=torrent, progress=progress)
    source = f"torrent:{report.mode['infohash_v1']}"
    _refuse_disagreement(manifest, report, source)
    pins = proven_pins(report)
    failed = [f"{r.path}: {r.status}" + (f" (expected {r.expected}, found {r.actual})" if r.expected else "")
              + (f": {r.detail}" if r.detail else "") for r in report.failures if r.status != "extra"]
    unverified = [f"{r.path}: {r.detail}" for r in report.results if r.status != "ok" and not r.failed]
    unverified += [f"{r.path}: proven by sha256 only ({r.detail})" for r in report.results
                   if r.status == "ok" and r.method == "sha256"]
    target = Path(output) if output is not None else Path(manifest_path)
    return PinReport(_save_pins(manifest, pins, source, target), source, pins, failed, unverified)


def _refuse_disagreement(manifest: Manifest, report: Any, source: str) -> None:
    """Raise when a recorded sha256 and the torrent disagree about a shard: its pieces pass but the hash differs,
    or the hash matches but its pieces fail. Two sources that disagree change nothing (docs/manifests.md)."""
    recorded = {e.path: e.sha256 for e in manifest.shards if e.sha256}
    for r in report.results:
        if r.status == "sha256" and r.method == "sha256+pieces":
            why = f"its pieces pass against {source}, but its sha256 is {r.actual}"
        elif r.status == "pieces" and r.sha256 and recorded.get(r.path) == r.sha256:
            why = f"its sha256 matches, but its pieces fail against {source}"
        else:
            continue
        raise VerificationError(f"{r.path}: the manifest records sha256 {recorded[r.path]}; {why}: the manifest and "
                                "the torrent disagree, nothing pinned (the manifest is unchanged)", path=r.path,
                                expected=recorded[r.path], actual=r.sha256)


def pin_from_hub(manifest_path: str | os.PathLike[str], repo: str, *, revision: str | None = None,
                 output: str | os.PathLike[str] | None = None, endpoint: str | None = None,
                 token: str | bool | None = None) -> PinReport:
    """Pin each shard's sha256 from the model hub's LFS metadata (no data downloaded).

    Recorded with ``sha256_source: "hub:<repo>@<commit>"``. A shard whose manifest already has a sha256
    (e.g. pinned from the torrent) must agree with the hub: otherwise nothing is written.

    Raises:
        VerificationError: the hub and the manifest disagree on a shard's sha256 (names both).
    """
    from .hub import hub_pins

    manifest = load_manifest(manifest_path)
    pins = hub_pins([(s.path, s.size) for s in manifest.shards], repo, revision=revision, endpoint=endpoint,
                    token=token)
    for entry in manifest.shards:
        theirs = pins.sha256.get(entry.path)
        if entry.sha256 and theirs and theirs != entry.sha256:
            raise VerificationError(
                f"{entry.path}: the hub's sha256 {theirs} ({pins.source}) differs from the manifest's "
                f"{entry.sha256} ({entry.sha256_source or 'source not recorded'}); two independent sources "
                "must agree: nothing pinned", path=entry.path, expected=entry.sha256, actual=theirs)
    target = Path(output) if output is not None else Path(manifest_path)
    missing = [f"{p}: the hub lists no LFS sha256 for it" for p in pins.missing]
    return PinReport(_save_pins(manifest, pins.sha256, pins.source, target), pins.source, pins.sha256,
                     unverified=missing)
