"""Check a checkpoint on disk against its manifest: missing, extra, size, sha256, and (deep) headers.

``verify()`` returns a :class:`VerifyReport`; it never raises for a bad shard (callers decide). A shard
whose sha256 the manifest does not know is reported ``unverified``, never ``ok``.

``checkpoint_dir`` is any layout :func:`grokweights.checkpoint.paths.resolve_checkpoint_dir` accepts: the
folder holding ``ckpt-0/``, ``ckpt-0/`` itself, or a bare folder of shard files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ShardFormatError
from .hashing import default_jobs, hash_files
from .manifest import Manifest, ShardEntry
from .paths import resolve_checkpoint_dir
from .shards import read_header

__all__ = ["verify", "VerifyReport", "ShardResult", "FAILURES"]

#: statuses that make a report fail.
FAILURES = frozenset({"missing", "extra", "size", "sha256", "header", "unreadable"})


@dataclass(frozen=True)
class ShardResult:
    """The outcome for one shard: ``ok``, ``unverified`` (no hash known or not hashed), or a failure."""

    path: str
    status: str
    expected: Any = None
    actual: Any = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status in FAILURES

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "expected": self.expected, "actual": self.actual,
                "detail": self.detail}


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found, shard by shard."""

    checkpoint: str
    manifest: str
    results: tuple[ShardResult, ...]
    bytes_hashed: int = 0
    seconds: float = 0.0
    jobs: int = 1
    mode: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no shard failed (unverified shards do not fail; see ``strict_ok``)."""
        return not self.failures

    @property
    def strict_ok(self) -> bool:
        """True when every shard passed with a known sha256."""
        return self.ok and not self.unverified

    @property
    def failures(self) -> list[ShardResult]:
        return [r for r in self.results if r.failed]

    @property
    def unverified(self) -> list[ShardResult]:
        return [r for r in self.results if r.status == "unverified"]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        rate = self.bytes_hashed / self.seconds if self.seconds else 0.0
        return {
            "ok": self.ok, "strict_ok": self.strict_ok, "checkpoint": self.checkpoint, "manifest": self.manifest,
            "counts": self.counts(), "bytes_hashed": self.bytes_hashed, "seconds": round(self.seconds, 3),
            "hash_rate_bytes_per_s": round(rate), "jobs": self.jobs, "mode": self.mode,
            "results": [r.to_dict() for r in self.results],
        }


def _check_static(root: Path, entry: ShardEntry, deep: bool) -> ShardResult | None:
    """Existence, size and (deep) header of one shard; None when those pass."""
    path = root / entry.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return ShardResult(entry.path, "missing", expected=entry.size, detail="file not found")
    except OSError as exc:
        return ShardResult(entry.path, "unreadable", detail=exc.strerror or str(exc))
    if size != entry.size:
        return ShardResult(entry.path, "size", expected=entry.size, actual=size,
                           detail=f"{size - entry.size:+d} bytes")
    if deep:
        try:
            problems = entry.tensor.check(read_header(path).parsed)
        except ShardFormatError as exc:
            return ShardResult(entry.path, "header", expected=entry.tensor.key, detail=exc.message)
        if problems:
            return ShardResult(entry.path, "header", expected=entry.tensor.key, actual=problems,
                               detail="; ".join(problems))
    return None


def _extras(ckpt: Path, root: Path, manifest: Manifest) -> list[ShardResult]:
    known = {s.path for s in manifest.shards}
    out = []
    for path in sorted(ckpt.iterdir()):
        rel = path.relative_to(root).as_posix()
        if rel not in known and not path.name.startswith("."):
            out.append(ShardResult(rel, "extra", detail="not in the manifest"))
    return out


def verify(checkpoint_dir: str | os.PathLike[str], manifest: Manifest, *, jobs: int | None = None,
           fast: bool = False, deep: bool = False, only: Iterable[str] | None = None,
           progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify a checkpoint against ``manifest``.

    Args:
        checkpoint_dir: the folder holding ``ckpt-0/``, or ``ckpt-0/`` itself.
        manifest: what the shards must be.
        jobs: files hashed in parallel (default: the usable CPUs).
        fast: check existence and sizes only; no sha256 (shards are then ``unverified``).
        deep: also parse each shard's header and check it against its tensor spec.
        only: check just these shard paths (e.g. a selective download); extras are then not reported.
        progress: called with byte counts as shards are hashed.
    """
    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    root = ckpt.parent
    wanted = set(only) if only is not None else None
    entries = [s for s in manifest.shards if wanted is None or s.path in wanted]
    jobs = jobs or default_jobs()
    start = time.perf_counter()
    results: dict[str, ShardResult] = {}
    to_hash: list[ShardEntry] = []
    for entry in entries:
        failed = _check_static(root, entry, deep)
        if failed is not None:
            results[entry.path] = failed
        elif fast or not entry.sha256:
            why = "--fast: sha256 not computed" if fast else "the manifest has no sha256 for it"
            results[entry.path] = ShardResult(entry.path, "unverified", detail=f"size ok; {why}")
        else:
            to_hash.append(entry)
    to_hash.sort(key=lambda e: -e.size)  # largest first balances the threads
    digests = hash_files([root / e.path for e in to_hash], jobs=jobs, progress=progress)
    for entry in to_hash:
        digest = digests[os.fspath(root / entry.path)]
        if isinstance(digest, OSError):
            results[entry.path] = ShardResult(entry.path, "unreadable", detail=str(digest))
        elif digest != entry.sha256:
            results[entry.path] = ShardResult(entry.path, "sha256", expected=entry.sha256, actual=digest)
        else:
            results[entry.path] = ShardResult(entry.path, "ok")
    ordered = [results[e.path] for e in entries]
    if wanted is None:
        ordered += _extras(ckpt, root, manifest)
    return VerifyReport(
        checkpoint=str(ckpt), manifest=manifest.origin or manifest.name, results=tuple(ordered),
        bytes_hashed=sum(e.size for e in to_hash), seconds=time.perf_counter() - start, jobs=jobs,
        mode={"fast": fast, "deep": deep},
    )
