"""Downloading so that files complete one after another, and dropping files once they are used.

What a consumer of whole files (``fetch --reshard``) needs from a running torrent, and nothing else:

- :func:`progressive` sets file priorities (the small files and the first shards at the top, then the
  shards in order) and libtorrent's sequential piece order, so shards complete one by one from the start
  instead of all near the end;
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
TOP, HIGH, NORMAL = 7, 6, 4


def progressive(handle: Any, selected: Iterable[TorrentFile], order: list[str], *, small: int = 16 << 20) -> None:
    """Priorities for ``selected`` files: non-shard files (the manifest) at the top, then small shards and the first
    shards of ``order`` (shard paths in the order they are used), then the rest; pieces in sequence."""
    import libtorrent as lt

    rank = {shard: i for i, shard in enumerate(order)}
    priorities = list(handle.get_file_priorities())
    for f in selected:
        position = rank.get(f.shard or "", -1)
        if f.shard is None:
            priorities[f.index] = TOP
        elif f.size <= small or position < 4:
            priorities[f.index] = HIGH
        else:
            priorities[f.index] = NORMAL
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
