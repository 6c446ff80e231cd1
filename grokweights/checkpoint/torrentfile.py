"""The v1 part of a ``.torrent`` file, read without libtorrent: infohash, piece hashes, file list.

The v1 infohash is the SHA-1 of the raw bencoded ``info`` dict, so a torrent whose infohash equals the one
in the official magnet link carries exactly the piece hashes its publisher made. Paths are relative to the
torrent's top folder (its ``name``), which a local copy may have renamed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from ..errors import NotRegularFileError, TorrentError, UsageError, VerificationError
from .bencode import decode_torrent
from .files import open_regular

__all__ = ["TorrentFile", "TorrentMeta", "parse_torrent", "read_torrent", "read_torrent_bytes", "require_infohash",
           "MAX_TORRENT_BYTES", "MAX_PIECE_LENGTH"]

#: largest piece accepted: libtorrent's own limit (a piece is held in memory while it is hashed).
MAX_PIECE_LENGTH = 256 * 1024 * 1024
#: largest ``.torrent`` file read (the 318 GB release's is about 400 kB; libtorrent itself stops at 10 MB).
MAX_TORRENT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class TorrentFile:
    """One file of a torrent: path inside the top folder, size, offset in the torrent's byte stream."""

    path: str
    size: int
    offset: int
    pad: bool = False

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class TorrentMeta:
    """What the v1 info dict of a torrent says: enough to check any copy piece by piece."""

    infohash_v1: str
    name: str
    piece_length: int
    piece_hashes: bytes  # 20 bytes per piece, concatenated
    files: tuple[TorrentFile, ...]
    single_file: bool = False
    origin: str = "torrent"

    @property
    def total_size(self) -> int:
        return self.files[-1].end if self.files else 0

    @property
    def num_pieces(self) -> int:
        return len(self.piece_hashes) // 20

    def piece_range(self, piece: int) -> tuple[int, int]:
        """The byte range ``[start, end)`` of ``piece`` in the torrent's stream of files."""
        start = piece * self.piece_length
        return start, min(start + self.piece_length, self.total_size)

    def piece_hash(self, piece: int) -> bytes:
        return self.piece_hashes[20 * piece:20 * piece + 20]

    def index_of(self, path: str) -> int:
        for i, f in enumerate(self.files):
            if f.path == path:
                return i
        raise KeyError(path)


def _fail(where: str, what: str, found: Any) -> TorrentError:
    return TorrentError(f"{where}: {what}, found {found!r}"[:300], path=where, expected=what, actual=found)


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, bytes):
        raise _fail(where, f"{what} as a byte string", type(value).__name__)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(where, f"{what} in UTF-8", value[:40]) from None


def _file_path(entry: dict, where: str) -> list[str]:
    parts = entry.get(b"path.utf-8", entry.get(b"path"))
    if not isinstance(parts, list) or not parts:
        raise _fail(where, "a non-empty 'path' list in each file", parts)
    names = [_text(p, where, "a path component") for p in parts]
    for name in names:
        if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise _fail(where, "plain path components (no '..', no separators)", "/".join(names))
    return names


def _int(value: Any, where: str, what: str) -> int:
    if not isinstance(value, int) or value < 0:
        raise _fail(where, f"{what} as a non-negative integer", value)
    return value


def _files(info: dict, where: str) -> tuple[list[tuple[str, int, bool]], bool]:
    if b"files" not in info:
        return [(_text(info.get(b"name"), where, "'name'"), _int(info.get(b"length"), where, "'length'"), False)], True
    listed = info[b"files"]
    if not isinstance(listed, list) or not listed:
        raise _fail(where, "a non-empty 'files' list", type(listed).__name__)
    out = []
    for entry in listed:
        if not isinstance(entry, dict):
            raise _fail(where, "a dict per file", type(entry).__name__)
        parts = _file_path(entry, where)
        attr = entry.get(b"attr", b"")
        pad = (isinstance(attr, bytes) and b"p" in attr) or parts[0] == ".pad"
        out.append(("/".join(parts), _int(entry.get(b"length"), where, "'length'"), pad))
    return out, False


def parse_torrent(data: bytes, *, where: str = "torrent") -> TorrentMeta:
    """Read the v1 metadata of a ``.torrent`` file's bytes.

    Raises:
        TorrentError: not canonical bencode, or no v1 piece hashes (a v2-only torrent), or inconsistent sizes.
    """
    top, info_bytes = decode_torrent(data, where=where)
    info = top[b"info"]
    name = _text(info.get(b"name"), where, "'name'")
    piece_length = _int(info.get(b"piece length"), where, "'piece length'")
    pieces = info.get(b"pieces")
    if not isinstance(pieces, bytes) or len(pieces) % 20:
        raise _fail(where, "v1 'pieces' (20 bytes per piece; a v2-only torrent has none)",
                    type(pieces).__name__ if not isinstance(pieces, bytes) else f"{len(pieces)} bytes")
    listed, single = _files(info, where)
    files, offset = [], 0
    for path, size, pad in listed:
        files.append(TorrentFile(path, size, offset, pad))
        offset += size
    if not 0 < piece_length <= MAX_PIECE_LENGTH:
        raise _fail(where, f"a 'piece length' between 1 and {MAX_PIECE_LENGTH} bytes", piece_length)
    expected = -(-offset // piece_length)
    if len(pieces) // 20 != expected:
        raise _fail(where, f"{expected} piece hashes for {offset} bytes in pieces of {piece_length}",
                    len(pieces) // 20)
    return TorrentMeta(hashlib.sha1(info_bytes).hexdigest(), name, piece_length, pieces, tuple(files),
                       single_file=single, origin=where)


def read_torrent_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a ``.torrent`` file: a regular file (checked on the opened descriptor) of bounded size.

    Raises:
        UsageError: missing or unreadable, not a regular file (a FIFO, a folder, a device), or too large.
    """
    shown = os.fspath(path)
    try:
        f = open_regular(shown, what=".torrent file", fix="give a .torrent file")
    except NotRegularFileError as exc:
        raise UsageError(exc.message, path=shown, expected="regular file", actual=exc.actual) from None
    except OSError as exc:
        raise UsageError(f"{shown}: cannot read torrent file ({exc.strerror or exc})", path=shown) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_TORRENT_BYTES:
            raise UsageError(f"{shown}: {size:,} bytes is too large for a .torrent file (at most "
                             f"{MAX_TORRENT_BYTES:,}); give the right file", path=shown,
                             expected=MAX_TORRENT_BYTES, actual=size)
        data = f.read(MAX_TORRENT_BYTES + 1)
    if len(data) > MAX_TORRENT_BYTES:  # grew while read
        raise UsageError(f"{shown}: more than {MAX_TORRENT_BYTES:,} bytes is too large for a .torrent file; give "
                         "the right file", path=shown, expected=MAX_TORRENT_BYTES, actual=len(data))
    return data


def read_torrent(path: str | os.PathLike[str]) -> TorrentMeta:
    """Read a ``.torrent`` file (see :func:`read_torrent_bytes`); errors name the file."""
    return parse_torrent(read_torrent_bytes(path), where=os.fspath(path))


def require_infohash(meta: TorrentMeta, expected: str | None, *, manifest: str = "the manifest") -> None:
    """Refuse a torrent whose v1 infohash is not the one ``expected`` (the manifest's ``sources.infohash_v1``).

    Raises:
        UsageError: the manifest names no infohash, so no torrent can be authenticated against it.
        VerificationError: the infohashes differ; names both.
    """
    if not expected:
        raise UsageError(f"{manifest} names no sources.infohash_v1, so torrent {meta.origin} cannot be "
                         "authenticated; use a manifest that records the release's infohash",
                         path=meta.origin, expected="sources.infohash_v1", actual=None)
    if meta.infohash_v1 != expected.lower():
        raise VerificationError(f"{meta.origin}: infohash {meta.infohash_v1} is not {manifest}'s "
                                f"{expected.lower()}; refusing to verify against another torrent",
                                path=meta.origin, expected=expected.lower(), actual=meta.infohash_v1)
