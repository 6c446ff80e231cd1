"""``fetch --dry-run`` before the torrent's metadata is known: the answer from the manifest alone.

(With the metadata at hand, a ``.torrent`` source or ``--torrent``, ``fetch`` answers from the torrent's own file
table, also without a session.)

A magnet link carries no file list; libtorrent gets it from the first peer that has it. Without a peer,
waiting would never end, but a manifest (the shipped ``grok-1`` one, or ``--manifest``) already lists
every shard and its size. The torrent's top folder name and its files other than shards (the release has
a few more files than its 770 shards) are not known offline, so the paths reported are the manifest's
(``ckpt-0/tensor…``, relative to the top folder), the bytes are those of the shards, and the report says
that the metadata itself is still to come.
"""

from __future__ import annotations

import os
from typing import Any

from ..checkpoint.manifest import Manifest
from ..errors import TorrentError
from .meta import Source, check_info_dict, load_torrent
from .select import TorrentFile, plan_space, select_files
from .state import DownloadState

__all__ = ["dry_run_from_manifest", "manifest_table", "metadata_from"]


def metadata_from(path: str | os.PathLike[str], src: Source, infohash: str) -> Any:
    """The ``torrent_info`` of a ``.torrent`` the user has for SOURCE's torrent (``fetch --torrent``): the
    metadata a dead swarm cannot give. Unsafe names and another torrent's file are refused, naming both."""
    ti = load_torrent(path).ti
    shown = os.fspath(path)
    check_info_dict(ti.info_section(), where=shown)
    found = str(ti.info_hashes().v1) if ti.info_hashes().has_v1() else "none (not a v1 torrent)"
    if found != infohash:
        raise TorrentError(f"{shown} is torrent {found}, but {src.text} is torrent {infohash}; give the .torrent "
                           "of the source being fetched", path=shown, expected=infohash, actual=found)
    return ti


def manifest_table(manifest: Manifest) -> list[TorrentFile]:
    """The manifest's shards as torrent files with paths below the (unknown) top folder."""
    return [TorrentFile(i, s.path, s.size, s.path, "") for i, s in enumerate(manifest.shards)]


def dry_run_from_manifest(src: Source, state: DownloadState, atp: Any, options: Any) -> dict[str, Any] | None:
    """The fields of a dry-run ``FetchReport`` from the manifest, or None when the metadata is at hand
    (a ``.torrent`` source, a saved ``DEST/<infohash>.torrent`` or resume data) or there is no manifest."""
    if atp.ti is not None or src.manifest is None or state.torrent_path.is_file() or state.resume_path.is_file():
        return None
    files = manifest_table(src.manifest)
    selected = select_files(files, include=options.include, layers=options.layers, manifest=src.manifest)
    needed, free, does_not_fit = plan_space(state.dest, selected, free=options.free_space, dry_run=True)
    if options.on_event is not None:
        options.on_event({"event": "selected", "files": len(selected), "total_files": len(files),
                          "bytes": sum(f.size for f in selected), "needed": needed, "free": free,
                          "torrent": None, "metadata": "pending"})
    origin = src.manifest.origin or src.manifest.name
    return dict(source=src.text, name="", infohash=state.infohash, dest=str(state.dest),
                torrent=str(state.torrent_path), checkpoint=None, manifest=str(origin),
                files=tuple(f.to_dict() for f in selected), total_files=len(files),
                selected_bytes=sum(f.size for f in selected), needed_bytes=needed, free_bytes=free, dry_run=True,
                ok=does_not_fit is None,
                extra={"metadata": "pending", "paths": "below the torrent's top folder, not known until the metadata "
                       "arrives; bytes of the manifest's shards only",
                       **({"does_not_fit": does_not_fit} if does_not_fit else {})})

