"""Manifests: what a checkpoint is (sources, model config) and what every shard must be (size, sha256).

A manifest is one JSON document (schema in ``docs/manifests.md``)::

    {
      "schema": "grokweights.manifest", "schema_version": 1,
      "name": "grok-1", "description": "...", "notes": "...",
      "sources": {"magnet": "magnet:?xt=urn:btih:...", "infohash_v1": "...", "mirror": "https://.../{path}"},
      "config": { ModelConfig fields },
      "total_size": 318239886140,
      "shards": [ {"path": "ckpt-0/tensor00000_000", "size": 3221225637, "sha256": null,
                   "tensor": { TensorSpec fields }}, ... ]      # "sha256_source" optional, see ShardEntry
    }

Shipped manifests live in ``manifests/`` and are found by name (``grok-1``); ``fetch`` and ``synth`` write
one beside a checkpoint as ``grokweights-manifest.json`` (``manifest create`` writes where ``-o`` says).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import constants
from .._atomic import write_atomic
from ..errors import ConfigError, ManifestError
from .config import ModelConfig
from .files import read_json
from .layout import TensorSpec
from .paths import resolve_checkpoint_dir

__all__ = ["Manifest", "ShardEntry", "Sources", "load_manifest", "find_local_manifest", "save_manifest",
           "shipped_manifests", "with_hashes", "SCHEMA", "SCHEMA_VERSION"]

SCHEMA = "grokweights.manifest"
SCHEMA_VERSION = 1
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Sources:
    """Where the checkpoint can be had: a BitTorrent magnet link and/or an HTTP mirror pattern."""

    magnet: str | None = None
    infohash_v1: str | None = None
    mirror: str | None = None  # URL with "{path}" for a shard path such as ckpt-0/tensor00000_000

    def to_dict(self) -> dict[str, Any]:
        return {"magnet": self.magnet, "infohash_v1": self.infohash_v1, "mirror": self.mirror}


@dataclass(frozen=True)
class ShardEntry:
    """One shard: path relative to the checkpoint folder, exact size, sha256 (None: not yet known).

    ``sha256_source`` is the provenance of the sha256, when recorded: ``torrent:<infohash>`` (hashed in the
    read that proved the file against the torrent's piece hashes), ``hub:<repo>@<commit>`` (the model
    hub's LFS metadata), several separated by spaces when they agree, or None (not recorded).
    """

    path: str
    size: int
    sha256: str | None
    tensor: TensorSpec
    sha256_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        spec = self.tensor.to_dict()
        spec.pop("expected_file_size")
        source = {"sha256_source": self.sha256_source} if self.sha256_source else {}
        return {"path": self.path, "size": self.size, "sha256": self.sha256, **source, "tensor": spec}


@dataclass(frozen=True)
class Manifest:
    """A checkpoint's identity: name, sources, model config and every shard."""

    name: str
    config: ModelConfig
    shards: tuple[ShardEntry, ...]
    sources: Sources = field(default_factory=Sources)
    description: str = ""
    notes: str = ""
    origin: str | None = None  # the file it was read from, if any

    @property
    def total_size(self) -> int:
        return sum(s.size for s in self.shards)

    @property
    def hashed(self) -> int:
        """How many shards have a sha256."""
        return sum(1 for s in self.shards if s.sha256)

    def shard(self, path: str) -> ShardEntry:
        for entry in self.shards:
            if entry.path == path:
                return entry
        raise ManifestError(f"manifest {self.name!r} has no shard {path!r}", path=self.origin, actual=path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "name": self.name,
            "description": self.description, "notes": self.notes, "sources": self.sources.to_dict(),
            "config": self.config.to_dict(), "total_size": self.total_size,
            "shards": [s.to_dict() for s in self.shards],
        }

    def to_json(self) -> str:
        lines = json.dumps({k: v for k, v in self.to_dict().items() if k != "shards"}, indent=2)[:-2]
        shards = ",\n    ".join(json.dumps(s.to_dict(), separators=(", ", ": ")) for s in self.shards)
        return f'{lines},\n  "shards": [\n    {shards}\n  ]\n}}\n'

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "manifest") -> Manifest:
        return _parse(data, source)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return save_manifest(self, path)


# ---------------------------------------------------------------------------------------------- parse


def _fail(source: str, where: str, expected: str, actual: Any) -> ManifestError:
    if isinstance(actual, int) and not isinstance(actual, bool) and actual.bit_length() > 64:
        actual = f"an integer of {actual.bit_length()} bits"
    shown = json.dumps(actual)[:80] if not isinstance(actual, str) else repr(actual[:80])
    return ManifestError(f"{source}: {where}: expected {expected}, found {shown[:80]}", path=source,
                         expected=expected, actual=actual)


_KIND_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


def _get(data: dict, key: str, kind: type, source: str, where: str, *, optional: bool = False) -> Any:
    if key not in data or data[key] is None:
        if optional:
            return None
        raise _fail(source, f"{where}{key}", _KIND_NAMES[kind], None)
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise _fail(source, f"{where}{key}", _KIND_NAMES[kind], value)
    return value


#: the largest shard size a manifest may state (2^50 bytes; Grok-1's largest shard is 2^31.6).
MAX_SHARD_SIZE = 1 << 50


def _normal_path(path: str) -> bool:
    """A relative POSIX path with no empty, '.' or '..' part, no NUL and no backslash."""
    return (bool(path) and "\0" not in path and "\\" not in path and not path.startswith("/")
            and all(part not in ("", ".", "..") for part in path.split("/")))


def _parse_shard(item: Any, i: int, source: str) -> ShardEntry:
    where = f"shards[{i}]"
    if not isinstance(item, dict):
        raise _fail(source, where, "an object", item)
    path = _get(item, "path", str, source, f"{where}.")
    if not _normal_path(path):
        raise _fail(source, f"{where}.path", "a relative path inside the checkpoint, normalised, such as "
                    "ckpt-0/tensor00000_000 (no empty, '.' or '..' parts, no NUL or backslash)", path)
    size = _get(item, "size", int, source, f"{where}.")
    if not 0 <= size <= MAX_SHARD_SIZE:
        raise _fail(source, f"{where}.size", f"an integer from 0 to {MAX_SHARD_SIZE}", size)
    sha = _get(item, "sha256", str, source, f"{where}.", optional=True)
    if sha is not None and not _SHA256_RE.fullmatch(sha):
        raise _fail(source, f"{where}.sha256", "64 lowercase hex digits or null", sha)
    provenance = _get(item, "sha256_source", str, source, f"{where}.", optional=True)
    tensor = _get(item, "tensor", dict, source, f"{where}.")
    try:
        spec = TensorSpec.from_dict(tensor)
    except KeyError as exc:
        raise _fail(source, f"{where}.tensor.{exc.args[0]}", "a value", None) from None
    except (ConfigError, TypeError, ValueError) as exc:
        raise _fail(source, f"{where}.tensor", "a valid tensor spec", str(exc)) from None
    return ShardEntry(path, size, sha, spec, provenance if sha is not None else None)


def _parse(data: Any, source: str) -> Manifest:
    if not isinstance(data, dict):
        raise _fail(source, "top level", "a JSON object", type(data).__name__)
    if data.get("schema") != SCHEMA:
        raise _fail(source, "schema", repr(SCHEMA), data.get("schema"))
    version = data.get("schema_version")
    if version != SCHEMA_VERSION or not isinstance(version, int) or isinstance(version, bool):
        raise _fail(source, "schema_version", f"{SCHEMA_VERSION} (this grokweights reads version "
                    f"{SCHEMA_VERSION}; upgrade grokweights for newer manifests)", version)
    name = _get(data, "name", str, source, "")
    sources = _get(data, "sources", dict, source, "", optional=True) or {}
    src = Sources(**{k: _get(sources, k, str, source, "sources.", optional=True)
                     for k in ("magnet", "infohash_v1", "mirror")})
    try:
        config = ModelConfig.from_dict(_get(data, "config", dict, source, ""), source=f"{source}: config")
    except ConfigError as exc:
        raise ManifestError(exc.message, path=source, expected=exc.expected, actual=exc.actual) from None
    items = _get(data, "shards", list, source, "")
    shards = tuple(_parse_shard(item, i, source) for i, item in enumerate(items))
    seen: set[str] = set()
    for i, entry in enumerate(shards):
        if entry.path in seen:
            raise _fail(source, f"shards[{i}].path", "a path listed once", entry.path)
        seen.add(entry.path)
    total = data.get("total_size")
    if total is not None and total != sum(s.size for s in shards):
        raise _fail(source, "total_size", f"the sum of the shard sizes ({sum(s.size for s in shards)})", total)
    return Manifest(name=name, config=config, shards=shards, sources=src,
                    description=data.get("description") or "", notes=data.get("notes") or "", origin=source)


# ------------------------------------------------------------------------------------------------ I/O


def _read(path: Path) -> Manifest:
    data = read_json(path, what="manifest", error=ManifestError,
                     fix="fix it, or give another manifest (a file or a shipped name such as grok-1)")
    return _parse(data, str(path))


def shipped_manifests() -> dict[str, Path]:
    """Names of the manifests shipped with grokweights and their files."""
    folder = constants.MANIFESTS_DIR
    return {p.stem: p for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def load_manifest(name_or_path: str | os.PathLike[str]) -> Manifest:
    """A manifest by shipped name (``grok-1``) or by file path."""
    text = os.fspath(name_or_path)
    shipped = shipped_manifests()
    if text in shipped:
        return _read(shipped[text])
    path = Path(text)
    if path.exists():
        return _read(path)
    raise ManifestError(f"no manifest {text!r}: not a file, and not a shipped name "
                        f"({', '.join(shipped) or 'none shipped'})", path=text,
                        expected=sorted(shipped), actual=text)


def find_local_manifest(checkpoint_dir: str | os.PathLike[str]) -> Manifest | None:
    """The manifest recorded beside a checkpoint (``<dir>/grokweights-manifest.json``), if any."""
    root = resolve_checkpoint_dir(checkpoint_dir).parent
    path = root / constants.LOCAL_MANIFEST_NAME
    return _read(path) if path.exists() else None


def save_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write a manifest atomically (temporary name, then rename)."""
    return write_atomic(path, manifest.to_json())


def _merge_sources(*sources: str | None) -> str | None:
    """Provenances joined by spaces, each once, in order."""
    parts = [p for src in sources if src for p in src.split()]
    return " ".join(dict.fromkeys(parts)) or None


def with_hashes(manifest: Manifest, hashes: dict[str, str], *, source: str | None = None) -> Manifest:
    """A copy with the given sha256 values filled in, by shard path, recording ``source`` as provenance.

    A hash equal to the one already recorded keeps its provenance and adds ``source``; a new hash
    replaces both.
    """
    def one(s: ShardEntry) -> ShardEntry:
        if s.path not in hashes:
            return s
        kept = s.sha256_source if s.sha256 == hashes[s.path] else None
        return replace(s, sha256=hashes[s.path], sha256_source=_merge_sources(kept, source))

    return replace(manifest, shards=tuple(one(s) for s in manifest.shards))
