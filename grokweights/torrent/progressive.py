"""Downloading so that files complete one after another, and dropping files once they are used.

What a consumer of whole files (``fetch --reshard``) needs from a running torrent, and nothing else:

- :func:`progressive` sets file priorities (the manifest and the embedding first, then the shards from the
  largest to the smallest) and libtorrent's sequential piece order, so shards complete one by one from the
  start instead of all near the end, and the last one is small;
- :func:`complete_files` lists the files whose every piece has passed its hash (also those found
  complete when an interrupted download was resumed, which raise no ``file_completed`` event);
- :func:`flush` asks libtorrent to write out what it still buffers;
- :func:`drop_file` stops wanting a file (priority 0) and :func:`stop_uploading` stops serving peers at
  all, for downloads whose files are deleted once used (a peer asking for a deleted file's pieces would
  otherwise stop the torrent with a file error).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .select import TorrentFile

__all__ = ["progressive", "complete_files", "flush", "drop_file", "stop_uploading", "pause", "resume"]

#: libtorrent's file priorities: 0 skip, 1 lowest, 4 default, 7 top.
TOP, HIGH = 7, 6


def progressive(handle: Any, selected: Iterable[TorrentFile], order: list[str]) -> None:
    """Priorities so that files complete one after another and the last to complete is small.

    Non-shard files (the manifest) come first, then the first shard of ``order`` (shard paths in the order
    they are used: the embedding), then the other shards from the largest to the smallest in five bands, with
    pieces in sequence within a band: what is left to convert after the last byte arrives is a small shard.
    """
    import libtorrent as lt

    first = order[0] if order else None
    shards = sorted((f for f in selected if f.shard is not None and f.shard != first), key=lambda f: -f.size)
    priorities = list(handle.get_file_priorities())
    for rank, f in enumerate(shards):
        priorities[f.index] = 5 - (5 * rank) // max(len(shards), 1)  # 5 (largest) .. 1 (smallest)
    for f in selected:
        if f.shard is None:
            priorities[f.index] = TOP
        elif f.shard == first:
            priorities[f.index] = HIGH
    handle.prioritize_files(priorities)
    handle.set_flags(lt.torrent_flags.sequential_download)


def complete_files(handle: Any) -> list[int]:
    """Indices of the wanted files whose every piece is downloaded and has passed its hash check."""
    import libtorrent as lt

    sizes = handle.torrent_file().files()
    progress = handle.file_progress(lt.torrent_handle.piece_granularity)
    priorities = handle.get_file_priorities()
    return [i for i, done in enumerate(progress) if priorities[i] > 0 and done == sizes.file_size(i)]


def flush(handle: Any) -> None:
    """Ask libtorrent to write every buffered block to the files (asynchronous)."""
    handle.flush_cache()


def drop_file(handle: Any, index: int) -> None:
    """Stop wanting file ``index`` (its pieces are not fetched again); nothing once the torrent was removed."""
    try:
        if handle.is_valid():
            handle.file_priority(index, 0)
    except RuntimeError:  # removed from its session meanwhile (the download has ended)
        pass


def stop_uploading(session: Any) -> None:
    """Serve no peer (every peer stays choked): for downloads whose files are deleted as they are used."""
    session.apply_settings({"unchoke_slots_limit": 0})


def pause(handle: Any) -> None:
    """Pause downloading (the torrent stays in the session)."""
    handle.pause()


def resume(handle: Any) -> None:
    handle.resume()
