"""One writer at a time: an advisory lock file held with ``flock`` for the whole of a write, naming its holder.

The one implementation behind the store's writer lock (``DST/.grokweights.lock``) and an export's destination
lock (``.DST.lock``). The file is opened without blocking and must be a regular file (a FIFO or a device in its
place is refused, never waited on); it is locked exclusively and non-blocking, so a second writer is refused at
once with the holder's pid; the kernel drops the lock when the holder exits, even after ``kill -9``, so a file
left behind never blocks. ``remove=True`` deletes the file when the holder lets go (a taker then checks that the
file it locked is still the one at the path, else takes the new one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import GrokWeightsError

__all__ = ["hold_lock"]


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _open_locked(path: Path, what: str, busy: Callable[[str], str], error: type[GrokWeightsError]) -> int | None:
    """A descriptor of ``path`` holding its lock; None when the file was replaced meanwhile (take the new one)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise error(f"{path}: cannot create {what} ({exc.strerror or exc}); check the destination",
                    path=str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: {what} is not a regular file; remove it, then rerun", path=str(path),
                        expected="a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise error(f"{path}: cannot lock {what} ({exc.strerror})", path=str(path)) from None
            raise error(busy(_holder(fd)), path=str(path), actual=_holder(fd)) from None
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):  # its holder removed it on release
            os.close(fd)
            return None
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike[str], *, what: str, busy: Callable[[str], str],
              error: type[GrokWeightsError] = GrokWeightsError, remove: bool = False) -> Iterator[Path]:
    """Hold the lock file ``path`` for the block (its folder is created); yields its path.

    Args:
        what: the file in words, for messages (``the store's lock file``).
        busy: the message when another process holds it, given the holder's pid.
        error: the error class raised.
        remove: delete the file when the block ends.

    Raises:
        ``error``: another process holds it, or it cannot be created, is not a regular file or cannot be locked.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(f"{path}: cannot create {what} ({exc.strerror or exc}); check the destination",
                    path=str(path)) from None
    for _ in range(100):
        fd = _open_locked(path, what, busy, error)
        if fd is not None:
            break
    else:
        raise error(f"{path}: {what} keeps being replaced; rerun", path=str(path))
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)  # releases the lock
