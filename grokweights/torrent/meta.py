"""Torrent metadata: resolving a source, refusing unsafe file names, saving ``.torrent`` files, magnet links.

A fetch stores its bookkeeping beside the data::

    DEST/
        <infohash>.torrent          the metadata (saved as soon as it is known; later runs and ``seed`` use it)
        .grokweights/
            <infohash>.resume       libtorrent resume data (saved periodically and on interruption)
            <infohash>.clean        present only after a clean stop: the resume data can be trusted
            <infohash>.lock         held (flock) while a fetch runs in DEST
            <infohash>.complete     which fetched files are complete (see grokweights.checkpoint.completion)
        <torrent name>/             the torrent's top folder
            ckpt-0/tensor00000_000 ...
            grokweights-manifest.json   written when fetching from a manifest

The file names inside a torrent come from strangers: :func:`check_info_dict` reads the raw info dict and
refuses absolute paths, ``..``, empty or separator-bearing components and symbolic links before anything is
written (libtorrent would silently rewrite some of them).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._atomic import write_atomic
from ..checkpoint.bencode import encode
from ..checkpoint.completion import STATE_DIR
from ..checkpoint.torrentfile import MAX_TORRENT_BYTES, read_torrent_bytes
from ..errors import TorrentError, UsageError

__all__ = ["Source", "resolve_source", "check_info_dict", "torrent_bytes", "write_torrent", "magnet_link",
           "TORRENT_STATE_DIR", "load_torrent", "parse_magnet", "read_torrent_bytes", "MAX_TORRENT_BYTES",
           "require_same_infohash", "source_params"]

logger = logging.getLogger(__name__)

#: hidden folder inside ``--dest`` holding resume data and the lock.
TORRENT_STATE_DIR = STATE_DIR

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
#: the name of the metadata a fetch saves beside the data (``DEST/<infohash>.torrent``).
_SAVED_TORRENT = re.compile(rb"[0-9a-fA-F]{40}\.torrent", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """What ``fetch`` was asked for, resolved.

    Attributes:
        text: the SOURCE as given.
        kind: ``"manifest"``, ``"magnet"`` or ``"torrent"``.
        magnet: the magnet URI (for magnet and manifest sources).
        torrent_path: the ``.torrent`` file (torrent sources).
        manifest: the manifest object when the source is a manifest (or one was given to verify against).
    """

    text: str
    kind: str
    magnet: str | None = None
    torrent_path: Path | None = None
    manifest: Any = None


def resolve_source(source: str | os.PathLike[str], *, manifest: Any = None) -> Source:
    """Resolve a SOURCE: a shipped manifest name or manifest file, a magnet URI, or a ``.torrent`` file.

    Args:
        source: ``"grok-1"`` (a shipped manifest), a path to a manifest ``.json``, a ``magnet:`` URI, or a
            path to a ``.torrent`` file.
        manifest: a manifest (object, name or path) to verify the download against when ``source`` is not
            itself a manifest.
    """
    text = os.fspath(source)
    if manifest is not None and not hasattr(manifest, "shards"):
        manifest = _load_manifest(manifest)
    if text.startswith("magnet:"):
        return Source(text, "magnet", magnet=text, manifest=manifest)
    path = Path(text)
    if text.endswith(".torrent"):
        if not path.exists():
            raise UsageError(f"torrent file {text} does not exist", path=text)
        if not path.is_file():
            raise UsageError(f"torrent file {text} is not a regular file; give the .torrent file itself", path=text)
        return Source(text, "torrent", torrent_path=path, manifest=manifest)
    loaded = _load_manifest(text)
    magnet = _manifest_magnet(loaded, text)
    return Source(text, "manifest", magnet=magnet, manifest=manifest if manifest is not None else loaded)


def load_torrent(path: str | os.PathLike[str]) -> Any:
    """A ``.torrent`` file as libtorrent ``add_torrent_params`` (``.ti`` set); never libtorrent's RuntimeError.

    Raises:
        UsageError: the file cannot be read (see :func:`read_torrent_bytes`).
        TorrentError: the bytes are not a valid torrent; names the file and libtorrent's reason.
    """
    import libtorrent as lt

    data = read_torrent_bytes(path)
    try:
        return lt.load_torrent_buffer(data)
    except RuntimeError as exc:
        shown, why = os.fspath(path), _short(exc)
        raise TorrentError(f"{shown}: not a valid .torrent file ({why}); download the .torrent again or fetch by "
                           "magnet link", path=shown, expected="bencoded torrent", actual=why) from None


def parse_magnet(uri: str, *, where: str | None = None) -> Any:
    """A magnet URI as libtorrent ``add_torrent_params``; a bad one raises :class:`UsageError` (not RuntimeError)."""
    import libtorrent as lt

    try:
        return lt.parse_magnet_uri(uri)
    except RuntimeError as exc:
        shown = uri if len(uri) <= 100 else uri[:97] + "..."
        origin = f"{where}: " if where and where != uri else ""
        raise UsageError(f"{origin}bad magnet link {shown!r} ({_short(exc)}); expected "
                         "magnet:?xt=urn:btih:<40 hex digits>", path=where, expected="magnet:?xt=urn:btih:<infohash>",
                         actual=shown) from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def source_params(src: Source) -> tuple[Any, str]:
    """The source parsed once: its add_torrent_params and v1 infohash (checked against the manifest's)."""
    if src.kind == "torrent":
        atp = load_torrent(src.torrent_path)
        check_info_dict(atp.ti.info_section(), where=str(src.torrent_path))
        hashes = atp.ti.info_hashes()
    else:
        atp = parse_magnet(src.magnet, where=src.text)
        hashes = atp.info_hashes
    if not hashes.has_v1():
        raise UsageError(f"{src.text}: only BitTorrent v1 (or hybrid) torrents are supported", actual=src.text)
    require_same_infohash(src, str(hashes.v1))
    return atp, str(hashes.v1)


def require_same_infohash(src: Source, infohash: str) -> None:
    """Refuse, before anything is fetched, a source whose v1 infohash is not the manifest's ``sources.infohash_v1``.

    Without this the whole torrent would be downloaded and then fail verification on every run.

    Raises:
        TorrentError: naming the manifest, the expected and the actual infohash.
    """
    expected = (getattr(getattr(src.manifest, "sources", None), "infohash_v1", None) or "").lower()
    if not expected or expected == infohash.lower():
        return
    origin = getattr(src.manifest, "origin", None) or getattr(src.manifest, "name", "the manifest")
    shown = src.text if len(src.text) <= 100 else src.text[:97] + "..."
    raise TorrentError(f"{shown} is torrent {infohash.lower()}, but manifest {origin} is for torrent {expected}; "
                       "nothing was fetched: give the manifest of this torrent, or fetch the manifest's own source",
                       path=str(origin), expected=expected, actual=infohash.lower())


def _load_manifest(name_or_path: Any) -> Any:
    from ..checkpoint.manifest import load_manifest

    return load_manifest(name_or_path)


def _manifest_magnet(manifest: Any, text: str) -> str:
    sources = getattr(manifest, "sources", None)
    magnet = getattr(sources, "magnet", None)
    if magnet:
        return magnet
    infohash = getattr(sources, "infohash_v1", None)
    if infohash and _HEX40.fullmatch(infohash):
        return f"magnet:?xt=urn:btih:{infohash.lower()}"
    raise UsageError(f"manifest {text} names no magnet link or infohash to fetch from; pass a magnet URI "
                     "or a .torrent file as SOURCE", path=text, expected="sources.magnet", actual=None)


def _bad_component(part: bytes) -> str | None:
    if part in (b"", b".", b".."):
        return f"component {part.decode(errors='replace')!r} would escape the destination folder"
    if b"/" in part or b"\\" in part or b"\x00" in part:
        return f"component {part.decode(errors='replace')!r} holds a path separator"
    if re.fullmatch(rb"[A-Za-z]:.*", part):
        return f"component {part.decode(errors='replace')!r} is a drive letter"
    if part.decode(errors="replace").casefold() == TORRENT_STATE_DIR:
        return f"component {part.decode(errors='replace')!r} is grokweights' own state folder"
    return None


def _refuse(where: str, shown: str, why: str, **fields: Any) -> TorrentError:
    return TorrentError(f"{where}: refusing file {shown!r}: {why}; nothing was written", path=shown, **fields)


def _preferred(entry: Any, key: bytes, where: str) -> Any:
    """``key.utf-8`` when present (what libtorrent uses), after checking that it agrees with ``key``."""
    plain, utf8 = entry.get(key), entry.get(key + b".utf-8")
    for value in (plain, utf8):
        parts = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(p, bytes) for p in parts):
            raise TorrentError(f"{where}: the torrent's {key.decode()} is not a string or list of strings; "
                               "nothing was written", path=where, expected="string", actual=type(value).__name__)
    if plain is not None and utf8 is not None and plain != utf8:
        shown = [plain, utf8] if isinstance(plain, bytes) else [b"/".join(plain), b"/".join(utf8)]
        a, b = (x.decode(errors="replace") for x in shown)
        raise _refuse(where, a, f"its {key.decode()}.utf-8 {b!r} differs from its {key.decode()} (libtorrent would "
                      "write the .utf-8 one, a checker the other)", expected=a, actual=b)
    return utf8 if utf8 is not None else plain


def _entries(info: dict, where: str) -> list[tuple[bytes, list[bytes], Any, Any]]:
    """``(top name, path below it, attr, symlink path)`` for every file of an info dict."""
    name = _preferred(info, b"name", where)
    if not isinstance(name, bytes):
        raise TorrentError(f"{where}: metadata has no info dict with a name", path=where)
    files = info.get(b"files")
    if files is None:
        return [(name, [], info.get(b"attr", b""), info.get(b"symlink path"))]
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise TorrentError(f"{where}: the torrent's file list is not a list of dicts; nothing was written", path=where)
    out = []
    for f in files:
        parts = _preferred(f, b"path", where)
        if not isinstance(parts, list):
            raise TorrentError(f"{where}: a file of the torrent has no path list; nothing was written", path=where)
        out.append((name, parts, f.get(b"attr", b""), f.get(b"symlink path")))
    return out


def check_info_dict(info_section: bytes, *, where: str = "torrent") -> None:
    """Refuse a torrent whose files would land outside the destination folder or on grokweights' own files.

    Checks the raw bencoded info dict (``torrent_info.info_section()``): the name and every path
    component must be a plain file name (no ``..``, no separators, not empty, no drive letter, not the
    state folder ``.grokweights``); ``name.utf-8`` and ``path.utf-8``, which libtorrent prefers, must
    equal ``name`` and ``path`` where both are given; the top name must not be the saved
    ``<infohash>.torrent`` of any download; and no file may be a symbolic link.

    Raises:
        TorrentError: naming the offending path.
    """
    import libtorrent as lt

    info = lt.bdecode(bytes(info_section))
    if not isinstance(info, dict) or b"name" not in info:
        raise TorrentError(f"{where}: metadata has no info dict with a name", path=where)
    for top, parts, attr, symlink in _entries(info, where):
        shown = "/".join(p.decode(errors="replace") for p in [top, *parts])
        if _SAVED_TORRENT.fullmatch(top):
            raise _refuse(where, shown, "its name is that of the <infohash>.torrent a fetch saves beside the data",
                          expected="another name", actual=top.decode(errors="replace"))
        for part in [top, *parts]:
            problem = _bad_component(part)
            if problem:
                raise _refuse(where, shown, f"its {problem}", expected="relative path of plain names", actual=shown)
        if (isinstance(attr, bytes) and b"l" in attr) or symlink is not None:
            raise _refuse(where, shown, "it is a symbolic link", expected="regular file", actual="symlink")


def torrent_bytes(info_section: bytes, *, trackers: Iterable[str] = (), web_seeds: Iterable[str] = (),
                  comment: str | None = None) -> bytes:
    """A ``.torrent`` file around the exact bytes of an info dict (so the infohash cannot change)."""
    outer: dict[str, Any] = {}
    trackers = list(dict.fromkeys(trackers))
    if trackers:
        outer["announce"] = trackers[0]
        outer["announce-list"] = [[t] for t in trackers]
    if comment:
        outer["comment"] = comment
    web_seeds = list(dict.fromkeys(web_seeds))
    if web_seeds:
        outer["url-list"] = web_seeds
    before = {k: v for k, v in outer.items() if k < "info"}
    after = {k: v for k, v in outer.items() if k > "info"}
    head = encode(before)[:-1]  # drop the closing "e"
    tail = encode(after)[1:]  # drop the opening "d"
    return head + b"4:info" + bytes(info_section) + tail


def write_torrent(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, data)


def magnet_link(ti: Any, *, peer: tuple[str, int] | None = None, trackers: Iterable[str] = ()) -> str:
    """The magnet link of a torrent: ``tr`` for each of ``trackers``, ``x.pe`` naming a peer to connect to when
    given (BEP 9)."""
    import libtorrent as lt

    uri = lt.make_magnet_uri(ti)
    for tracker in dict.fromkeys(trackers):
        uri += f"&tr={quote(tracker, safe='')}"
    if peer is not None:
        host, port = peer
        uri += f"&x.pe={'[' + host + ']' if ':' in host else host}:{port}"
    return uri
