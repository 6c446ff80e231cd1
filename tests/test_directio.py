"""A store's chunk files written past the page cache: the same bytes as ordinary writes, whatever the alignment.

``write_chunk`` writes a chunk's whole 4 KiB blocks with O_DIRECT (copying bytes at an unaligned address into
the thread's aligned buffer first) and the rest plus the crc32c trailer with an ordinary write; a file system
that refuses O_DIRECT at open or at the write gets ordinary writes for everything.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

import crc32c
import numpy as np
import pytest

from grokweights._directio import ALIGN, WRITE_IO_ENV, open_direct
from grokweights.errors import UsageError
from grokweights.store.chunkfile import write_chunk

needs_direct = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this platform")


def _expected(data: bytes) -> bytes:
    return data + struct.pack("<I", crc32c.crc32c(data))


@pytest.mark.parametrize("size", [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, 3 * ALIGN, (1 << 20) + 123])
@pytest.mark.parametrize("offset", [0, 1, 64])  # where the bytes sit in memory: aligned, or not
@pytest.mark.parametrize("mode", ["direct", "buffered"])
def test_a_chunk_file_is_its_bytes_and_their_crc32c(tmp_path, monkeypatch, size, offset, mode):
    monkeypatch.setenv(WRITE_IO_ENV, mode)
    backing = np.random.default_rng(size).integers(0, 256, size + offset + ALIGN, dtype=np.uint8)
    start = (-backing.ctypes.data % ALIGN) + offset  # the bytes begin `offset` past a page boundary
    data = backing[start:start + size]
    path = tmp_path / "a" / "c" / "0"  # folders made on the way
    value = write_chunk(str(path), memoryview(data))
    assert path.read_bytes() == _expected(data.tobytes())
    assert value == crc32c.crc32c(data.tobytes())
    again = write_chunk(str(path), memoryview(data[: size // 2]))  # rewritten in place: truncated first
    assert path.read_bytes() == _expected(data[: size // 2].tobytes()) and again == crc32c.crc32c(data[: size // 2])


@needs_direct
def test_o_direct_is_used_on_the_suites_disk(tmp_path, monkeypatch):
    monkeypatch.delenv(WRITE_IO_ENV, raising=False)
    (tmp_path / "f").write_bytes(b"")
    fd = open_direct(tmp_path / "f")
    assert fd >= 0 and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
    os.close(fd)
    monkeypatch.setenv(WRITE_IO_ENV, "buffered")
    assert open_direct(tmp_path / "f") == -1
    monkeypatch.setenv(WRITE_IO_ENV, "bufferd")  # a typo is refused, not taken for the default
    with pytest.raises(UsageError, match="GROKWEIGHTS_WRITE_IO='bufferd'"):
        open_direct(tmp_path / "f")


@needs_direct
@pytest.mark.parametrize("where", ["open", "write"])
def test_a_file_system_that_refuses_o_direct(tmp_path, monkeypatch, where):
    real_open, real_pwrite, refused = os.open, os.pwrite, []

    def refusing_open(path, flags, *args):
        if where == "open" and flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args)

    def refusing_pwrite(fd, data, offset):
        if where == "write" and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "open", refusing_open)
    monkeypatch.setattr(os, "pwrite", refusing_pwrite)
    data = np.random.default_rng(1).integers(0, 256, 5 * ALIGN + 7, dtype=np.uint8)
    write_chunk(str(tmp_path / "0"), memoryview(data))
    assert refused and (tmp_path / "0").read_bytes() == _expected(data.tobytes())


@needs_direct
def test_a_full_disk_under_a_direct_write_is_an_os_error(tmp_path, monkeypatch):
    real = os.pwrite

    def full(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as caught:
        write_chunk(str(tmp_path / "0"), memoryview(np.zeros(4 * ALIGN, np.uint8)))
    assert caught.value.errno == errno.ENOSPC
