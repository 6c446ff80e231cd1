"""Check a checkpoint on disk against its manifest: missing, extra, size, sha256, and (deep) headers.

``verify()`` returns a :class:`VerifyReport`; it never raises for a bad shard (callers decide). Each shard
is proven by its sha256 (from the manifest), by the v1 piece hashes of the release's torrent, or both: the
result's ``method`` is ``sha256``, ``pieces`` or ``sha256+pieces``. A shard proven by neither is reported
``unverified`` with the reason, never ``ok``.

The torrent is the one given (``torrent=``), or the ``.torrent`` that ``fetch`` keeps beside the data
(``<infohash>.torrent`` in the checkpoint folder or the one above it), used for the shards the manifest has
no sha256 for. Its infohash must be the manifest's ``sources.infohash_v1``: any other torrent is refused.

``checkpoint_dir`` is any layout :func:`grokweights.checkpoint.paths.resolve_checkpoint_dir` accepts: the
folder holding ``ckpt-0/``, ``ckpt-0/`` itself, or a bare folder of shard files.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import GrokWeightsError
from .completion import incomplete_reason, incomplete_shards
from .files import file_kind
from .hashing import default_jobs, hash_files
from .manifest import Manifest, ShardEntry
from .paths import resolve_checkpoint_dir
from .pieces import Verdict, check_copy, decide
from .shards import read_header
from .torrentfile import TorrentMeta, read_torrent, require_infohash

__all__ = ["verify", "require_verified", "VerifyReport", "ShardResult", "FAILURES", "find_torrent"]

#: statuses that make a report fail.
FAILURES = frozenset({"missing", "extra", "size", "sha256", "pieces", "header", "unreadable", "incomplete"})


@dataclass(frozen=True)
class ShardResult:
    """The outcome for one shard: ``ok``, ``unverified`` (not proven, ``detail`` says why), or a failure.

    ``method`` says what proved an ``ok`` shard (``sha256``, ``pieces`` or ``sha256+pieces``); ``sha256`` is
    the digest computed in this run, if any (``manifest pin`` and ``fetch`` record it).
    """

    path: str
    status: str
    expected: Any = None
    actual: Any = None
    detail: str = ""
    method: str | None = None
    sha256: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILURES

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "method": self.method, "expected": self.expected,
                "actual": self.actual, "detail": self.detail, "sha256": self.sha256}


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found, shard by shard."""

    checkpoint: str
    manifest: str
    results: tuple[ShardResult, ...]
    bytes_hashed: int = 0
    seconds: float = 0.0
    jobs: int = 1
    mode: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no shard failed (unverified shards do not fail; see ``strict_ok``)."""
        return not self.failures

    @property
    def strict_ok(self) -> bool:
        """True when every shard was proven (by sha256, pieces or both)."""
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


def _unfinished(entry: ShardEntry, unfinished: dict[str, str]) -> ShardResult | None:
    reason = incomplete_reason(unfinished, entry.path)
    return ShardResult(entry.path, "incomplete", expected=entry.size, detail=reason) if reason else None


def _check_static(root: Path, entry: ShardEntry, deep: bool) -> ShardResult | None:
    """Existence, size and (deep) header of one shard; None when those pass."""
    path = root / entry.path
    try:
        st = path.stat()
    except FileNotFoundError:
        return ShardResult(entry.path, "missing", expected=entry.size, detail="file not found")
    except (OSError, ValueError) as exc:
        return ShardResult(entry.path, "unreadable", detail=getattr(exc, "strerror", None) or str(exc))
    if not stat.S_ISREG(st.st_mode):
        return ShardResult(entry.path, "unreadable", expected="a regular file", actual=file_kind(st.st_mode),
                           detail=f"{file_kind(st.st_mode)}, not a regular file; replace it (re-fetch it)")
    size = st.st_size
    if size != entry.size:
        return ShardResult(entry.path, "size", expected=entry.size, actual=size,
                           detail=f"{size - entry.size:+d} bytes")
    if deep:
        try:
            problems = entry.tensor.check(read_header(path).parsed)
        except GrokWeightsError as exc:
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


def find_torrent(root: str | os.PathLike[str], infohash: str | None) -> Path | None:
    """The ``<infohash>.torrent`` that ``fetch`` keeps beside the data: in ``root`` or the folder above it."""
    if not infohash:
        return None
    root = Path(root)
    for folder in (root, root.parent):
        candidate = folder / f"{infohash.lower()}.torrent"
        if candidate.is_file():
            return candidate
    return None


def _load_torrent(torrent: str | os.PathLike[str] | TorrentMeta | None, manifest: Manifest,
                  root: Path) -> TorrentMeta | None:
    """The torrent given, or the one found beside the data; refused unless its infohash is the manifest's."""
    if torrent is None:
        torrent = find_torrent(root, manifest.sources.infohash_v1)
        if torrent is None:
            return None
    meta = torrent if isinstance(torrent, TorrentMeta) else read_torrent(torrent)
    require_infohash(meta, manifest.sources.infohash_v1, manifest=f"manifest {manifest.origin or manifest.name}")
    return meta


def _by_pieces(meta: TorrentMeta, root: Path, entries: list[ShardEntry], manifest: Manifest,
               progress: Callable[[int], None] | None) -> tuple[dict[str, Verdict], dict[str, str], int]:
    """Verdicts and sha256 (same read) for ``entries``, keyed by manifest path; and the bytes read."""
    from .pieces import map_copy

    known = [s.path for s in manifest.shards]
    prefix = map_copy(meta, root, known).prefix
    in_torrent = {f.path for f in meta.files if not f.pad}
    to_torrent = {e.path: e.path[len(prefix):] for e in entries
                  if e.path.startswith(prefix) and e.path[len(prefix):] in in_torrent}
    if not to_torrent:
        return {}, {}, 0
    result = check_copy(meta, root, paths=to_torrent.values(), known=known, sha256=True, progress=progress)
    sha = {e.path: e.sha256 for e in entries}
    proven = {t: result.checks[t].sha256 == sha[m] for m, t in to_torrent.items() if sha[m]}
    verdicts = decide(result, proven)
    return ({m: verdicts[t] for m, t in to_torrent.items()},
            {m: result.checks[t].sha256 for m, t in to_torrent.items() if result.checks[t].sha256},
            result.bytes_read)


def _combine(entry: ShardEntry, verdict: Verdict | None, digest: str | None, why_not: str) -> ShardResult:
    """One shard's result from its sha256 (if the manifest has one) and its pieces verdict (if checked)."""
    ok = dict(path=entry.path, status="ok", sha256=digest)
    if entry.sha256 and digest is not None and digest != entry.sha256:
        proven = verdict is not None and verdict.status == "ok"  # the torrent proves the data: the hash is wrong
        return ShardResult(entry.path, "sha256", expected=entry.sha256, actual=digest,
                           method="sha256+pieces" if proven else "sha256", sha256=digest,
                           detail=f"pieces: {verdict.detail}" if verdict else "")
    matched = bool(entry.sha256) and digest == entry.sha256
    if verdict is None:
        return (ShardResult(**ok, method="sha256") if matched
                else ShardResult(entry.path, "unverified", detail=f"size ok; {why_not}"))
    if verdict.status == "ok":
        return ShardResult(**ok, method="sha256+pieces" if matched else "pieces", detail=verdict.detail)
    if verdict.status == "failed":
        note = "; its sha256 matches the manifest, so the manifest and the torrent disagree" if matched else ""
        return ShardResult(entry.path, "pieces", actual=list(verdict.pieces), method="pieces", sha256=digest,
                           detail=verdict.detail + note)
    if matched:
        return ShardResult(**ok, method="sha256", detail=f"pieces: {verdict.detail}")
    return ShardResult(entry.path, "unverified", detail=verdict.detail)


def _why_not(fast: bool, meta: TorrentMeta | None, in_pieces: bool) -> str:
    if fast:
        return "--fast: nothing hashed"
    if meta is None:
        return "the manifest has no sha256 for it and no torrent was given or found beside the data"
    return "the manifest has no sha256 for it" + ("" if in_pieces else f" and torrent {meta.infohash_v1} lacks it")


def verify(checkpoint_dir: str | os.PathLike[str], manifest: Manifest, *, jobs: int | None = None,
           fast: bool = False, deep: bool = False, only: Iterable[str] | None = None,
           torrent: str | os.PathLike[str] | TorrentMeta | None = None,
           progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Verify a checkpoint against ``manifest``, by sha256 and/or the release torrent's piece hashes.

    Args:
        checkpoint_dir: the folder holding ``ckpt-0/``, or ``ckpt-0/`` itself.
        manifest: what the shards must be.
        jobs: files hashed in parallel by sha256 alone (default: the usable CPUs).
        fast: check existence and sizes only; nothing hashed (shards are then ``unverified``).
        deep: also parse each shard's header and check it against its tensor spec.
        only: check just these shard paths (e.g. a selective download); extras are then not reported.
        torrent: a ``.torrent`` (path or :class:`TorrentMeta`) whose infohash is the manifest's
            ``sources.infohash_v1``: every shard is then also checked by pieces. Default: the
            ``<infohash>.torrent`` kept beside the data by ``fetch``, for shards without a sha256.
        progress: called with byte counts as shards are hashed.

    Raises:
        VerificationError: the torrent's infohash is not the manifest's (names both).
    """
    ckpt = resolve_checkpoint_dir(checkpoint_dir)
    root = ckpt.parent
    wanted = set(only) if only is not None else None
    entries = [s for s in manifest.shards if wanted is None or s.path in wanted]
    jobs = jobs or default_jobs()
    start = time.perf_counter()
    meta = None if fast else _load_torrent(torrent, manifest, root)
    unfinished = incomplete_shards(root)  # what a download's completion record lists as not yet complete
    static = {e.path: _unfinished(e, unfinished) or _check_static(root, e, deep) for e in entries}
    sound = [e for e in entries if static[e.path] is None]
    by_pieces = [e for e in sound if meta is not None and (torrent is not None or not e.sha256)]
    by_sha = [e for e in sound if e.sha256 and not fast and e not in by_pieces]
    verdicts, digests, read = _by_pieces(meta, root, by_pieces, manifest, progress) if by_pieces else ({}, {}, 0)
    digests.update(_sha256(root, by_sha, jobs, progress))
    results = []
    for entry in entries:
        digest = digests.get(entry.path)
        if static[entry.path] is not None:
            results.append(static[entry.path])
        elif isinstance(digest, OSError):
            results.append(ShardResult(entry.path, "unreadable", detail=str(digest)))
        else:
            why = _why_not(fast, meta, entry.path in verdicts)
            results.append(_combine(entry, verdicts.get(entry.path), digest, why))
    if wanted is None:
        results += _extras(ckpt, root, manifest)
    return VerifyReport(
        checkpoint=str(ckpt), manifest=manifest.origin or manifest.name, results=tuple(results),
        bytes_hashed=read + sum(e.size for e in by_sha), seconds=time.perf_counter() - start, jobs=jobs,
        mode={"fast": fast, "deep": deep, "torrent": meta.origin if meta else None,
              "infohash_v1": meta.infohash_v1 if meta else None},
    )


def _sha256(root: Path, entries: list[ShardEntry], jobs: int,
            progress: Callable[[int], None] | None) -> dict[str, str | OSError]:
    """sha256 of ``entries``, several files at a time (largest first balances the threads)."""
    entries = sorted(entries, key=lambda e: -e.size)
    digests = hash_files([root / e.path for e in entries], jobs=jobs, progress=progress)
    return {e.path: digests[os.fspath(root / e.path)] for e in entries}


def require_verified(checkpoint_dir: str | os.PathLike[str], manifest: Manifest | None, only: Iterable[str], *,
                     jobs: int | None = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Verify the shards ``only`` before a command reads them (``reshard``, ``export``); raise on any failure.

    Returns ``{"manifest", "counts", "unverified"}``: ``unverified`` says why shards passed unproven (a
    manifest without sha256 and no torrent beside the data), empty when every shard was proven.

    Raises:
        VerificationError: no manifest, or a shard failed (missing, size, sha256, pieces, incomplete per the
            download's completion record); the first three are named, with the fix (or ``--no-verify``).
    """
    from ..errors import VerificationError

    if manifest is None:
        raise VerificationError(f"{checkpoint_dir}: no manifest to verify against; pass --manifest FILE|NAME or "
                                "--no-verify", path=checkpoint_dir)
    report = verify(checkpoint_dir, manifest, jobs=jobs, only=only, progress=progress)
    if not report.ok:
        bad = report.failures
        shown = "; ".join(f"{r.path}: {r.status}" + (f" (expected {r.expected}, got {r.actual})"
                                                     if r.actual is not None else f" ({r.detail[:200]})"
                                                     if r.detail else "") for r in bad[:3])
        raise VerificationError(f"{report.checkpoint}: {len(bad)} shard(s) failed verification against manifest "
                                f"{manifest.name!r}: {shown}; re-run `grokweights fetch` to repair them, or pass "
                                "--no-verify", path=report.checkpoint, actual=[r.path for r in bad])
    unproven = report.unverified
    why = (f"{len(unproven)} shard(s) unverified: {unproven[0].detail}; sizes match but nothing proves their bytes"
           if unproven else "")
    return {"manifest": manifest.name, "counts": report.counts(), "unverified": why}
