"""Make a BitTorrent v1 torrent of a local checkpoint folder: ``grokweights torrent create``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..checkpoint.torrentfile import MAX_PIECE_LENGTH
from ..errors import UsageError
from .meta import load_torrent, magnet_link, torrent_bytes, write_torrent

__all__ = ["create_torrent", "piece_size_for", "TorrentInfo", "describe_torrent"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorrentInfo:
    """What a ``.torrent`` file holds: its name, infohash, magnet link, files, bytes and pieces."""

    torrent: str
    name: str
    infohash: str
    magnet: str
    files: int
    bytes: int
    piece_size: int
    pieces: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_torrent(path: str | os.PathLike[str]) -> TorrentInfo:
    """Read a ``.torrent`` file into a :class:`TorrentInfo`; a corrupt one raises :class:`TorrentError`."""
    atp = load_torrent(path)
    ti = atp.ti
    return TorrentInfo(torrent=os.fspath(path), name=ti.name(), infohash=str(ti.info_hashes().v1),
                       magnet=magnet_link(ti, trackers=atp.trackers), files=ti.num_files(), bytes=ti.total_size(),
                       piece_size=ti.piece_length(), pieces=ti.num_pieces())


def piece_size_for(total_bytes: int) -> int:
    """A power-of-two piece size giving about 2,000 pieces, between 256 KiB and 16 MiB.

    Multi-GB shards want large pieces (fewer hashes, less metadata, faster transfers); 16 MiB keeps the
    318 GB release at ~19,000 pieces.
    """
    target = max(total_bytes // 2000, 1)
    size = 256 * 1024
    while size < target and size < 16 * 1024 * 1024:
        size *= 2
    return size


def _list_files(directory: Path) -> list[tuple[str, int]]:
    """Regular files under ``directory`` (relative POSIX paths, sorted), skipping hidden files and .torrent."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(root) / name
            if name.startswith(".") or name.endswith(".torrent") or path.is_symlink():
                continue
            found.append((path.relative_to(directory).as_posix(), path.stat().st_size))
    return sorted(found)


def create_torrent(directory: str | os.PathLike[str], output: str | os.PathLike[str] | None = None, *,
                   piece_size: int | None = None, web_seeds: Iterable[str] = (), trackers: Iterable[str] = (),
                   comment: str | None = None, progress: Callable[[int], None] | None = None,
                   force: bool = False) -> Path:
    """Make a BitTorrent v1 torrent of a local checkpoint folder.

    Hidden files and ``*.torrent`` files are left out. v1 only: hybrid v1+v2 torrents carry pad files that
    some standard clients do not complete.

    Args:
        directory: the folder to share (e.g. the one holding ``ckpt-0/``); it becomes the torrent's name.
        output: where to write the ``.torrent``; default ``directory/<infohash>.torrent``.
        piece_size: bytes per piece (a power of two, 16 KiB to 256 MiB); default from :func:`piece_size_for`.
        web_seeds: HTTP mirrors (BEP 19) whose URL + name + path serve the same files.
        trackers: announce URLs.
        comment: free text stored in the torrent.
        progress: called with the bytes hashed so far, piece by piece.
        force: let ``output`` replace an existing file (never a shard, a folder or a device: refused, like an
            ``output`` in a checkpoint's folder or in a folder that does not exist, before anything is hashed).

    Returns:
        The path of the written ``.torrent``.
    """
    import libtorrent as lt

    from ..checkpoint.files import check_output

    if output is not None:
        check_output(output, force=force, option="-o", what="a torrent")

    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a folder; give the folder holding the checkpoint", path=directory)
    files = _list_files(directory)
    if not files:
        raise UsageError(f"{directory} holds no files to share", path=directory)
    total = sum(size for _, size in files)
    piece_size = piece_size or piece_size_for(total)
    if not 16 * 1024 <= piece_size <= MAX_PIECE_LENGTH or piece_size & (piece_size - 1):
        raise UsageError(f"piece size {piece_size} must be a power of two from 16 KiB to {MAX_PIECE_LENGTH >> 20} MiB "
                         "(libtorrent's largest)", expected=f"power of two in 16384..{MAX_PIECE_LENGTH}",
                         actual=piece_size)
    entries = [lt.create_file_entry(f"{directory.name}/{rel}", size) for rel, size in files]
    ct = lt.create_torrent(entries, piece_size, flags=lt.create_torrent.v1_only)
    ct.set_creator("grokweights")
    last_piece = ct.num_pieces() - 1
    report = (lambda i: progress(ct.piece_size(i))) if progress is not None else (lambda i: None)
    lt.set_piece_hashes(ct, str(directory.parent), report)
    logger.info("hashed %d pieces of %d bytes (last %d)", last_piece + 1, piece_size, ct.piece_size(last_piece))
    ti = lt.torrent_info(lt.bencode(ct.generate()))
    data = torrent_bytes(ti.info_section(), trackers=trackers, web_seeds=web_seeds, comment=comment)
    out = Path(output) if output is not None else directory / f"{ti.info_hashes().v1}.torrent"
    return write_torrent(out, data)
