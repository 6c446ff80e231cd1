"""Verify a local copy file by file against a torrent's v1 piece hashes (SHA-1), with sha256 in the same read.

A piece hash covers ``piece length`` bytes of the torrent's files laid end to end, so it spans file
boundaries; still, a file is proven when every piece that overlaps it passes, and only its first and last
piece (its *boundary* pieces) need bytes of a neighbour. Every other piece of the file is *interior*.

Planning is pure (:func:`file_pieces`, :func:`map_copy`); execution (:class:`PieceHasher`) reads each file
once, in order, into a few reused buffers: SHA-1 per piece on the reading thread, and sha256 of the file
(for pinning) on a worker thread at the same time (hashlib releases the GIL on large buffers).
:func:`check_copy` runs it over a copy in
torrent order, and :func:`decide` turns the per-piece results into per-file verdicts:

- a failing interior piece fails its file;
- a failing boundary piece fails the file whose interior pieces do not all pass (or whose sha256 is known
  wrong); where that cannot decide it, the verdict names the piece and every file it spans;
- a file whose boundary piece touches a file absent locally is ``unverified`` with that reason, never ``ok``.

:meth:`PieceHasher.check_file` is the per-file API (for a file completed during a download, say): one
file, given its neighbours' bytes in its two boundary pieces (:func:`boundary_bytes` reads them from a
local copy), SHA-1 per piece and sha256 of the file in one read.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .torrentfile import TorrentFile, TorrentMeta

__all__ = ["FilePieces", "LocalCopy", "FileCheck", "Verdict", "CopyCheck", "PieceHasher", "file_pieces",
           "map_copy", "read_range", "boundary_bytes", "check_copy", "decide"]

#: bytes read per chunk (rounded up to whole pieces): large enough to keep Python out of the way, small enough
#: that the second hash of a chunk (sha256 after SHA-1) still finds it in the CPU cache.
CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class FilePieces:
    """The pieces overlapping one file; ``head``/``tail`` are its neighbours' byte ranges in its boundary pieces."""

    index: int
    path: str
    offset: int
    size: int
    first: int  # first piece (== last + 1 for an empty file: no pieces)
    last: int
    head: tuple[int, int] | None  # torrent byte range before the file in piece ``first``
    tail: tuple[int, int] | None  # torrent byte range after the file in piece ``last``

    @property
    def boundary(self) -> tuple[int, ...]:
        """Pieces shared with other files' bytes."""
        shared = [self.first] if self.head else []
        if self.tail and self.last not in shared:
            shared.append(self.last)
        return tuple(shared)


def file_pieces(meta: TorrentMeta, index: int) -> FilePieces:
    """Which pieces file ``index`` overlaps, and which bytes of other files its boundary pieces hold."""
    f = meta.files[index]
    length = meta.piece_length
    if f.size == 0:
        return FilePieces(index, f.path, f.offset, 0, 1, 0, None, None)
    first, last = f.offset // length, (f.end - 1) // length
    head = (first * length, f.offset) if f.offset > first * length else None
    tail_end = min((last + 1) * length, meta.total_size)
    tail = (f.end, tail_end) if tail_end > f.end else None
    return FilePieces(index, f.path, f.offset, f.size, first, last, head, tail)


def files_in(meta: TorrentMeta, start: int, end: int) -> list[TorrentFile]:
    """The files (pad files included) holding bytes of the torrent range ``[start, end)``."""
    return [f for f in meta.files if f.size and f.offset < end and f.end > start]


@dataclass(frozen=True)
class LocalCopy:
    """Where the torrent's files are on disk: ``root / prefix + torrent path`` (the top folder may differ)."""

    root: Path
    prefix: str = ""

    def local(self, f: TorrentFile) -> Path:
        return self.root / (self.prefix + f.path)

    def problem(self, f: TorrentFile) -> str | None:
        """Why the bytes of ``f`` cannot be read here (None when they can)."""
        if f.pad:
            return None
        try:
            size = self.local(f).stat().st_size
        except FileNotFoundError:
            return f"{self.prefix + f.path} is absent locally"
        except OSError as exc:
            return f"{self.prefix + f.path} is unreadable ({exc.strerror or exc})"
        if size != f.size:
            return f"{self.prefix + f.path} has {size} bytes locally, the torrent says {f.size}"
        return None


def map_copy(meta: TorrentMeta, root: str | os.PathLike[str], known: Iterable[str] = ()) -> LocalCopy:
    """Map the torrent onto the folder ``root`` by relative path.

    Torrent paths are relative to the torrent's top folder, whatever it is called locally. When none of
    them is among ``known`` (e.g. the manifest's shard paths) but ``<name>/<path>`` is (a torrent made of
    ``ckpt-0/`` itself, or a single-file torrent), the torrent's name becomes a prefix.
    """
    known = set(known)
    paths = [f.path for f in meta.files if not f.pad]
    if meta.single_file or (known and not known & set(paths) and known & {f"{meta.name}/{p}" for p in paths}):
        return LocalCopy(Path(root), "" if meta.single_file else f"{meta.name}/")
    return LocalCopy(Path(root))


def _read_exact(path: Path, offset: int, out: memoryview) -> None:
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        _fill(fh, out, path)


def _fill(fh, out: memoryview, path: Path) -> None:
    done = 0
    while done < len(out):
        n = fh.readinto(out[done:])
        if not n:
            raise OSError(f"{path}: ended {len(out) - done} bytes early")
        done += n


def read_range(meta: TorrentMeta, copy: LocalCopy, start: int, end: int) -> bytes | str:
    """The bytes of the torrent range ``[start, end)`` from local files (zeros for pad files), or why not."""
    out = bytearray(end - start)
    view = memoryview(out)
    for f in files_in(meta, start, end):
        a, b = max(start, f.offset), min(end, f.end)
        if f.pad:
            continue  # already zeros
        problem = copy.problem(f)
        if problem:
            return problem
        try:
            _read_exact(copy.local(f), a - f.offset, view[a - start:b - start])
        except OSError as exc:
            return f"{copy.prefix + f.path} is unreadable ({exc.strerror or exc})"
    return bytes(out)


def boundary_bytes(meta: TorrentMeta, copy: LocalCopy, index: int) -> tuple[bytes | str | None, bytes | str | None]:
    """The neighbours' bytes of file ``index``'s first and last piece (``before``/``after`` of
    :meth:`PieceHasher.check_file`): bytes, the reason they cannot be read, or None where not needed."""
    fp = file_pieces(meta, index)
    return (read_range(meta, copy, *fp.head) if fp.head else None,
            read_range(meta, copy, *fp.tail) if fp.tail else None)


@dataclass
class FileCheck:
    """The pieces of one file: which failed, which could not be checked and why, and its sha256."""

    path: str
    pieces: FilePieces
    failed: list[int] = field(default_factory=list)
    unknown: dict[int, str] = field(default_factory=dict)
    sha256: str | None = None
    error: str | None = None
    shared: dict[int, tuple[str, ...]] = field(default_factory=dict)  # boundary piece -> other files in it

    @property
    def interior_failed(self) -> list[int]:
        return [p for p in self.failed if p not in self.shared]


class PieceHasher:
    """Reads files into reused buffers; SHA-1 on the reading thread, sha256 on a worker; a context manager."""

    def __init__(self, *, chunk_bytes: int = CHUNK_BYTES, buffers: int = 3) -> None:
        self.chunk_bytes = chunk_bytes
        self.nbuf = buffers
        self._sha256 = ThreadPoolExecutor(1, thread_name_prefix="sha256")  # one thread keeps updates in order
        self._buffers: list[bytearray] = []
        self._busy: list[list[Future]] = []
        self.bytes_read = 0

    def __enter__(self) -> PieceHasher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sha256.shutdown(wait=True)
        self._buffers.clear()

    def _buffer(self, i: int, size: int) -> bytearray:
        """Buffer ``i``, once its previous jobs are done; grown (never shrunk) to ``size``."""
        slot = i % self.nbuf
        while len(self._buffers) <= slot:
            self._buffers.append(bytearray(0))
            self._busy.append([])
        for job in self._busy[slot]:
            job.result()
        self._busy[slot] = []
        if len(self._buffers[slot]) < size:
            self._buffers[slot] = bytearray(size)
        return self._buffers[slot]

    def _drain(self) -> None:
        for jobs in self._busy:
            for job in jobs:
                job.result()
            jobs.clear()

    def check_file(self, meta: TorrentMeta, index: int, path: str | os.PathLike[str], *,
                   before: bytes | str | None = None, after: bytes | str | None = None, sha256: bool = True,
                   progress: Callable[[int], None] | None = None) -> FileCheck:
        """Check every piece of torrent file ``index`` stored at ``path``, reading the file once.

        Args:
            before: the neighbours' bytes of the first piece (``file_pieces(meta, index).head``), or a
                reason they are not available (that piece is then *unknown*).
            after: the same for the last piece (``.tail``).
            sha256: also hash the whole file with sha256 in the same read.
        """
        fp = file_pieces(meta, index)
        check = FileCheck(fp.path, fp, shared=_shared(meta, fp))
        for piece, rng, given in ((fp.first, fp.head, before), (fp.last, fp.tail, after)):
            if rng is not None and not isinstance(given, bytes):
                check.unknown[piece] = given or "its neighbour's bytes were not given"
            elif rng is not None and len(given) != rng[1] - rng[0]:
                raise ValueError(f"{fp.path}: piece {piece} needs {rng[1] - rng[0]} neighbour bytes, got {len(given)}")
        digest = hashlib.sha256() if sha256 else None
        try:
            with open(path, "rb", buffering=0) as fh:
                self._read_pieces(meta, fp, fh, Path(path), (before, after), check, digest, progress)
            self._drain()
        except OSError as exc:
            self._drain()
            check.error = f"{fp.path}: {exc.strerror or exc}"
            return check
        check.failed.sort()
        check.sha256 = digest.hexdigest() if digest is not None else None
        return check

    def _read_pieces(self, meta, fp, fh, path, neighbours, check, digest, progress) -> None:
        """Read the file chunk by chunk (whole pieces): SHA-1 of its pieces here, on the reading thread; the
        chunk's sha256 update handed to the one sha256 worker."""
        length = meta.piece_length
        group = max(1, self.chunk_bytes // length)
        for n, g0 in enumerate(range(fp.first, fp.last + 1, group)):
            g1 = min(g0 + group, fp.last + 1)
            a, b = g0 * length, min(g1 * length, meta.total_size)
            view = memoryview(self._buffer(n, group * length))[:b - a]
            lo, hi = max(a, fp.offset), min(b, fp.offset + fp.size)
            for rng, given in zip((fp.head, fp.tail), neighbours):
                if rng is not None and isinstance(given, bytes) and a <= rng[0] < b:
                    view[rng[0] - a:rng[1] - a] = given
            _fill(fh, view[lo - a:hi - a], path)
            self.bytes_read += hi - lo
            if digest is not None:  # sha256, the slower and serial hash, gets a thread (a core) of its own
                self._busy[n % self.nbuf] = [self._sha256.submit(digest.update, view[lo - a:hi - a])]
            _check_pieces(meta, view, g0, g1, check)  # SHA-1 here, while the chunk is hot in this core's cache
            if progress is not None:
                progress(hi - lo)


def _check_pieces(meta: TorrentMeta, view: memoryview, g0: int, g1: int, check: FileCheck) -> None:
    """SHA-1 of pieces ``g0..g1-1`` held in ``view``; failures appended to ``check.failed``."""
    base = g0 * meta.piece_length
    for piece in range(g0, g1):
        if piece in check.unknown:
            continue
        start, end = meta.piece_range(piece)
        if hashlib.sha1(view[start - base:end - base]).digest() != meta.piece_hash(piece):
            check.failed.append(piece)  # list.append is atomic under the GIL


def _shared(meta: TorrentMeta, fp: FilePieces) -> dict[int, tuple[str, ...]]:
    out = {}
    for piece in fp.boundary:
        start, end = meta.piece_range(piece)
        out[piece] = tuple(f.path for f in files_in(meta, start, end) if not f.pad and f.path != fp.path)
    return {p: others for p, others in out.items() if others}


@dataclass(frozen=True)
class CopyCheck:
    """Every checked file of a copy, in torrent order, and what the read cost."""

    torrent: TorrentMeta
    copy: LocalCopy
    checks: dict[str, FileCheck]
    bytes_read: int
    seconds: float


def check_copy(meta: TorrentMeta, root: str | os.PathLike[str], *, paths: Iterable[str] | None = None,
               known: Iterable[str] = (), sha256: bool = True, chunk_bytes: int = CHUNK_BYTES,
               progress: Callable[[int], None] | None = None) -> CopyCheck:
    """Check the files ``paths`` (torrent paths; default every file) of the copy at ``root``, in torrent order.

    One sequential read of each checked file; each boundary piece's neighbour bytes are read from the
    neighbouring file (at most one piece per boundary). A file absent locally or of the wrong size gets a
    :class:`FileCheck` with ``error`` and is not read.
    """
    copy = map_copy(meta, root, known)
    wanted = set(paths) if paths is not None else None
    checks: dict[str, FileCheck] = {}
    start = time.perf_counter()
    with PieceHasher(chunk_bytes=chunk_bytes) as hasher:
        for index, f in enumerate(meta.files):
            if f.pad or (wanted is not None and f.path not in wanted):
                continue
            problem = copy.problem(f)
            if problem:
                checks[f.path] = FileCheck(f.path, file_pieces(meta, index), error=problem)
                continue
            before, after = boundary_bytes(meta, copy, index)
            checks[f.path] = hasher.check_file(meta, index, copy.local(f), before=before, after=after,
                                               sha256=sha256, progress=progress)
        read = hasher.bytes_read
    return CopyCheck(meta, copy, checks, read, time.perf_counter() - start)


@dataclass(frozen=True)
class Verdict:
    """What the pieces say about one file: ``ok``, ``failed`` or ``unverified``, and why."""

    path: str
    status: str
    detail: str = ""
    pieces: tuple[int, ...] = ()


def _where(meta: TorrentMeta, fp: FilePieces, piece: int) -> str:
    start, end = meta.piece_range(piece)
    lo, hi = max(start, fp.offset) - fp.offset, min(end, fp.offset + fp.size) - fp.offset
    return f"piece {piece} (bytes {lo}-{hi - 1} of the file)"


def _shared_verdict(meta: TorrentMeta, check: FileCheck, checks: dict[str, FileCheck],
                    proven: dict[str, bool]) -> Verdict:
    """A file whose interior pieces pass but a boundary piece fails: blame it, its neighbour, or both."""
    piece = check.failed[0]
    others = check.shared[piece]
    guilty = [o for o in others if proven.get(o) is False or (o in checks and checks[o].interior_failed)]
    where = _where(meta, check.pieces, piece)
    if proven.get(check.path) is True or guilty:
        culprit = ", ".join(guilty) if guilty else ", ".join(others)
        return Verdict(check.path, "unverified", f"{where} fails, but it also spans {culprit}, which fails; "
                       "this file's bytes in it are unproven", (piece,))
    if others and all(proven.get(o) is True for o in others):
        return Verdict(check.path, "failed", f"{where} fails its SHA-1, and {', '.join(others)} "
                       "is proven by sha256", (piece,))
    return Verdict(check.path, "failed", f"{where} fails its SHA-1; it spans {check.path} and "
                   f"{', '.join(others)}, and the pieces cannot tell which is damaged", (piece,))


def _verdict(meta: TorrentMeta, check: FileCheck, checks: dict[str, FileCheck], proven: dict[str, bool]) -> Verdict:
    if check.error:
        return Verdict(check.path, "failed", check.error)
    interior = check.interior_failed
    if interior:
        more = f" and {len(interior) - 1} more" if len(interior) > 1 else ""
        return Verdict(check.path, "failed", f"{_where(meta, check.pieces, interior[0])}{more} fails its SHA-1",
                       tuple(interior))
    if check.failed:
        return _shared_verdict(meta, check, checks, proven)
    if check.unknown:
        piece, why = next(iter(check.unknown.items()))
        return Verdict(check.path, "unverified", f"piece {piece} cannot be checked: {why}", (piece,))
    return Verdict(check.path, "ok", f"{check.pieces.last - check.pieces.first + 1} pieces pass")


def decide(result: CopyCheck, proven: dict[str, bool] | None = None) -> dict[str, Verdict]:
    """Per-file verdicts from a :func:`check_copy` result.

    Args:
        proven: files whose sha256 is known to match (True) or not (False); they settle failing boundary
            pieces that the pieces alone cannot attribute.
    """
    proven = proven or {}
    return {path: _verdict(result.torrent, check, result.checks, proven) for path, check in result.checks.items()}
