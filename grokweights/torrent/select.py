"""Which files of a torrent to fetch, how much room that needs, and checking them once fetched.

Planning over the torrent's file table: :func:`file_table` lists the files (torrent path, size, and
the manifest shard path ``ckpt-0/tensor…`` when the file is one), :func:`select_files` applies
``--include`` globs and ``--layers`` (through the manifest's tensor layout), :func:`preflight` compares
the bytes still to write with the free space at the destination. :func:`preflight` and :func:`check_sizes`
look at the disk; the rest is pure.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._space import free_space, gib, require_space
from ..checkpoint.layout import parse_layers
from ..constants import CKPT_DIRNAME, LOCAL_MANIFEST_NAME
from ..errors import InsufficientSpaceError, UsageError

__all__ = ["TorrentFile", "file_table", "select_files", "preflight", "plan_space", "check_sizes", "checkpoint_root",
           "require_manifest_for_layers"]


@dataclass(frozen=True)
class TorrentFile:
    """One file of a torrent.

    Attributes:
        index: the file's index in the torrent.
        path: its path in the torrent (starting with the torrent's name for multi-file torrents).
        size: bytes.
        shard: the manifest path (``ckpt-0/tensor00000_000``) when the file is a checkpoint shard.
        root: the torrent path of the folder holding ``ckpt-0`` (where the local manifest belongs).
    """

    index: int
    path: str
    size: int
    shard: str | None = None
    root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "size": self.size, "shard": self.shard}


def file_table(ti: Any) -> list[TorrentFile]:
    """The files of a ``libtorrent.torrent_info``, pad files left out."""
    fs = ti.layout()
    out = []
    for i in range(fs.num_files()):
        if fs.file_flags(i) & 1:  # pad file
            continue
        path = fs.file_path(i).replace(os.sep, "/")
        parts = path.split("/")
        shard = root = None
        if CKPT_DIRNAME in parts[:-1]:
            cut = len(parts) - 1 - parts[::-1].index(CKPT_DIRNAME)
            shard = "/".join(parts[cut:])
            root = "/".join(parts[:cut])
        out.append(TorrentFile(i, path, fs.file_size(i), shard, root))
    return out


def checkpoint_root(files: Iterable[TorrentFile]) -> str | None:
    """The torrent path of the folder holding ``ckpt-0/`` ("" for the top), or None without shards."""
    roots = {f.root for f in files if f.shard is not None}
    return min(roots, key=len) if roots else None


def _matches(f: TorrentFile, patterns: list[str]) -> bool:
    inner = f.path.split("/", 1)[1] if "/" in f.path else f.path
    names = {f.path, inner, Path(f.path).name} | ({f.shard} if f.shard else set())
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns for name in names)


def select_files(files: list[TorrentFile], *, include: Iterable[str] | None = None, layers: str | None = None,
                 manifest: Any = None) -> list[TorrentFile]:
    """The files to fetch: all by default, else those matching any ``include`` glob or in ``layers``.

    Globs match the torrent path, the path below the torrent's top folder, the file name or the shard
    path (``ckpt-0/tensor0000*``). ``layers`` (``"0-7,12"``) needs a manifest: it selects the shards of
    those decoder layers plus the shared embedding and final norm. The local manifest file, when the
    torrent carries one, is always fetched.

    Raises:
        UsageError: ``layers`` without a manifest, or a selection that matches nothing.
    """
    patterns = list(include or [])
    if not patterns and not layers:
        return list(files)
    wanted_shards: set[str] = set()
    require_manifest_for_layers(layers, manifest)
    if layers:
        chosen = set(parse_layers(layers, num_layers=manifest.config.num_layers))
        wanted_shards = {s.path for s in manifest.shards if s.tensor.layer is None or s.tensor.layer in chosen}
    out = [f for f in files if (f.shard in wanted_shards) or (patterns and _matches(f, patterns))
           or Path(f.path).name == LOCAL_MANIFEST_NAME]
    if not any(Path(f.path).name != LOCAL_MANIFEST_NAME for f in out):
        shown = ", ".join(patterns + ([f"--layers {layers}"] if layers else []))
        raise UsageError(f"the selection {shown} matches no file of the torrent ({len(files)} files, e.g. "
                         f"{files[0].path if files else 'none'})", expected="a glob matching files", actual=shown)
    return out


def require_manifest_for_layers(layers: str | None, manifest: Any) -> None:
    """Raise :class:`UsageError` when ``layers`` is given without a manifest to map layers to files."""
    if layers and manifest is None:
        raise UsageError("--layers needs a manifest to map layers to files; fetch from a manifest name "
                         "(e.g. grok-1) or pass --manifest", expected="a manifest", actual=None)


def _on_disk(path: Path, size: int) -> int:
    """Bytes of ``path`` already allocated (a sparse partial file counts only its written blocks)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return min(size, st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size)


def preflight(dest: Path, selected: list[TorrentFile], *,
              free: Callable[[Path], int] | None = None) -> tuple[int, int]:
    """Check the bytes still to write fit at ``dest`` (through :func:`grokweights._space.require_space`); returns
    ``(needed, available)``.

    Raises:
        InsufficientSpaceError: with the bytes needed, available and the path.
    """
    needed = sum(f.size - _on_disk(dest / f.path, f.size) for f in selected)
    available = free(dest) if free is not None else free_space(dest)
    require_space(dest, needed, what="still to fetch", measure=lambda _: available,
                  hint=f"free {gib(max(needed - available, 0))} or fetch fewer files with --include / --layers")
    return needed, available


def plan_space(dest: Path, selected: list[TorrentFile], *, free: Callable[[Path], int] | None = None,
               dry_run: bool = False) -> tuple[int, int, str | None]:
    """:func:`preflight` for a plan: ``(needed, available, problem)``; a dry run reports a selection that does
    not fit in ``problem`` (so the plan is still shown) where a real run raises."""
    try:
        return (*preflight(dest, selected, free=free), None)
    except InsufficientSpaceError as exc:
        if not dry_run:
            raise
        return int(exc.expected), int(exc.actual), exc.message


def check_sizes(dest: Path, selected: Iterable[TorrentFile]) -> list[dict[str, Any]]:
    """Every selected file that is missing or of the wrong size on disk (empty when all match)."""
    problems = []
    for f in selected:
        path = dest / f.path
        if not path.is_file():
            problems.append({"path": f.path, "status": "missing", "expected": f.size, "actual": None})
        elif path.stat().st_size != f.size:
            problems.append({"path": f.path, "status": "size", "expected": f.size, "actual": path.stat().st_size})
    return problems
