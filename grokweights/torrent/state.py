"""Per-download bookkeeping in ``DEST/.grokweights/``: the lock, resume data and the clean-stop marker.

Resume data is only trusted after a clean stop (the marker is written once the data has been flushed
and saved, and removed as soon as a new run starts). After a crash or ``kill -9`` the marker is absent and
libtorrent re-checks whatever is on disk instead: pieces that were complete are kept, pieces that were in
flight fail their hash and are fetched again.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from .._atomic import write_atomic
from ..errors import TorrentError
from .meta import TORRENT_STATE_DIR

__all__ = ["DownloadState"]

logger = logging.getLogger(__name__)


class DownloadState:
    """The lock and resume files of one infohash in one destination."""

    def __init__(self, dest: Path, infohash: str) -> None:
        self.dest = dest
        self.infohash = infohash
        self.folder = dest / TORRENT_STATE_DIR
        self.resume_path = self.folder / f"{infohash}.resume"
        self.clean_path = self.folder / f"{infohash}.clean"
        self.lock_path = self.folder / f"{infohash}.lock"
        self._lock_fd: int | None = None

    @property
    def torrent_path(self) -> Path:
        """Where the metadata is kept: ``DEST/<infohash>.torrent``."""
        return self.dest / f"{self.infohash}.torrent"

    def acquire(self) -> None:
        """Take the lock (released by the kernel if the process dies), or refuse a second fetch."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TorrentError(f"another fetch of {self.infohash} is running into {self.dest} (lock "
                               f"{self.lock_path}); wait for it or stop it first", path=str(self.lock_path)) from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def load_resume(self) -> tuple[Any | None, bool]:
        """``(add_torrent_params or None, trusted)``; consumes the clean marker."""
        import libtorrent as lt

        clean = self.clean_path.exists()
        self.clean_path.unlink(missing_ok=True)
        if not self.resume_path.is_file():
            return None, False
        try:
            params = lt.read_resume_data(self.resume_path.read_bytes())
        except Exception as exc:  # libtorrent raises RuntimeError subclasses for bad bencoding
            logger.warning("ignoring unreadable resume data %s: %s", self.resume_path, exc)
            return None, False
        if str(params.info_hashes.v1) != self.infohash:
            logger.warning("ignoring resume data %s of another torrent", self.resume_path)
            return None, False
        return params, clean

    def save_resume(self, params: Any, *, clean: bool = False) -> None:
        """Write resume data atomically; ``clean`` marks it trustworthy for the next run."""
        import libtorrent as lt

        data = lt.write_resume_data_buf(params)
        write_atomic(self.resume_path, data)
        if clean:
            self.clean_path.touch()
