"""Writing past the page cache (``O_DIRECT``): its rules, its fallbacks and its switch, in one place.

grokweights writes hundreds of gigabytes once (a store, an export) and reads none of them back in the same
process. Through the page cache the kernel first copies every byte into fresh cache pages, which on the
project's machines is the largest single cost of such a write (0.5-0.7 GB/s), and those pages push out what
the machine had cached. With ``O_DIRECT`` the device takes the bytes from the writer's own buffer.

The rules: the buffer's address, the file offset and the length must be multiples of the device's logical
block size; :data:`ALIGN` (a page) satisfies every device. A tail shorter than a block goes through an ordinary
write to the same file, which the kernel keeps coherent with the direct writes. A file system that does not
take ``O_DIRECT`` says so with ``EINVAL`` (or ``EOPNOTSUPP``) at ``open`` or at the first write: the writer then
uses ordinary writes for the same bytes. ``GROKWEIGHTS_WRITE_IO=buffered`` asks for ordinary writes everywhere.
Durability is unchanged: the writers still ``fsync`` (or ``syncfs``) before they publish.
"""

from __future__ import annotations

import errno
import mmap
import os

import numpy as np

__all__ = ["WRITE_IO_ENV", "ALIGN", "REFUSED", "direct_wanted", "open_direct", "aligned_buffer", "is_aligned",
           "pwrite_all"]

#: ``buffered``: every write through the page cache; ``direct`` (the default): past it where allowed
WRITE_IO_ENV = "GROKWEIGHTS_WRITE_IO"
#: the alignment of direct writes: address, offset and length (a page: enough for every logical block size)
ALIGN = 4096
#: the errors with which a file system refuses O_DIRECT
REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def direct_wanted() -> bool:
    """Whether writes may go past the page cache (the platform has ``O_DIRECT`` and nobody asked otherwise).

    Raises:
        UsageError: ``GROKWEIGHTS_WRITE_IO`` is set to something other than ``direct`` or ``buffered``.
    """
    value = os.environ.get(WRITE_IO_ENV, "").strip().lower()
    if value not in ("", "direct", "buffered"):
        from .errors import UsageError

        raise UsageError(f"{WRITE_IO_ENV}={value!r}: expected 'direct' or 'buffered'", expected="direct|buffered",
                         actual=value)
    return hasattr(os, "O_DIRECT") and value != "buffered"


def open_direct(path: str | os.PathLike[str]) -> int:
    """A write-only ``O_DIRECT`` descriptor of the existing file ``path``, or -1 where refused or not wanted."""
    if not direct_wanted():
        return -1
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECT)
    except OSError as exc:
        if exc.errno in REFUSED:
            return -1
        raise


def aligned_buffer(nbytes: int) -> np.ndarray:
    """A uint8 buffer of ``nbytes`` starting on a page (a private anonymous mapping)."""
    mm = mmap.mmap(-1, max(1, nbytes), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mm, np.uint8, count=nbytes)


def is_aligned(data: np.ndarray) -> bool:
    """Whether a contiguous uint8 array may be written directly: its address is a multiple of :data:`ALIGN`."""
    return data.ctypes.data % ALIGN == 0


def pwrite_all(fd: int, data: memoryview, offset: int, path: str | os.PathLike[str]) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked: go on where it stopped)."""
    while len(data):
        n = os.pwrite(fd, data, offset)
        if n <= 0:
            raise OSError(errno.EIO, f"wrote {n} bytes at offset {offset}", os.fspath(path))
        data, offset = data[n:], offset + n
