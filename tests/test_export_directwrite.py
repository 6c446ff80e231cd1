"""The export's output files: written past the page cache (O_DIRECT) where allowed, byte for byte what was asked.

``OutputFile`` appends after bytes already in the file (a GGUF header written by the ``gguf`` package), in two
aligned buffers handed to an I/O thread; the tail under one block and every file system that refuses O_DIRECT
go through ordinary writes. Each case compares the whole file with the bytes that were written.
"""

from __future__ import annotations

import errno
import hashlib
import os

import numpy as np
import pytest

from grokweights._directio import ALIGN
from grokweights._directio import WRITE_IO_ENV as IO_ENV
from grokweights.engines._directwrite import BUFFER_BYTES, OutputFile

MiB = 1 << 20


def _payload(sizes: list[int], seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


def _write(path, start: int, pieces: list[bytes], *, as_array: bool = False) -> bool:
    prefix = _payload([start], seed=99)[0]
    path.write_bytes(prefix)
    with OutputFile(path, start=start) as f:
        for i, piece in enumerate(pieces):
            assert f.tell() == start + sum(map(len, pieces[:i]))
            f.write(np.frombuffer(piece, np.uint8) if as_array else piece)
        direct = f.direct
    assert path.read_bytes() == prefix + b"".join(pieces)
    return direct


@pytest.mark.parametrize("start", [0, 1, ALIGN - 1, ALIGN, 5000, BUFFER_BYTES + 3])
@pytest.mark.parametrize("mode", ["direct", "buffered"])
def test_every_byte_lands_where_it_was_written(tmp_path, monkeypatch, start, mode):
    monkeypatch.setenv(IO_ENV, mode)
    sizes = [1, 7, ALIGN, BUFFER_BYTES - 1, 3, 2 * BUFFER_BYTES + 5, 0, 12345]
    direct = _write(tmp_path / "out.bin", start, _payload(sizes), as_array=start % 2 == 0)
    if mode == "buffered":
        assert not direct
    elif hasattr(os, "O_DIRECT"):  # this suite's disks take O_DIRECT (ext4, tmpfs on Linux >= 6.6)
        assert direct, "O_DIRECT was refused on the test's file system"


@pytest.mark.parametrize("total", [0, ALIGN, BUFFER_BYTES, BUFFER_BYTES + ALIGN - 1])
def test_whole_blocks_and_buffers_and_nothing(tmp_path, total):
    _write(tmp_path / "out.bin", 0, _payload([total]))


def test_a_file_system_that_refuses_o_direct_at_open(tmp_path, monkeypatch):
    real = os.open

    def refusing(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing)
    assert not _write(tmp_path / "out.bin", 100, _payload([3 * MiB, BUFFER_BYTES + 17]))


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this platform")
def test_a_file_system_that_refuses_the_first_direct_write(tmp_path, monkeypatch):
    import fcntl

    real, refused = os.pwrite, []

    def refusing(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and not refused:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", refusing)
    assert not _write(tmp_path / "out.bin", 10, _payload([2 * BUFFER_BYTES + 99]))
    assert refused == [0]


def test_a_failed_write_raises_and_releases_everything(tmp_path, monkeypatch):
    import threading

    real = os.pwrite

    def full(fd, data, offset):
        if offset >= BUFFER_BYTES:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    path = tmp_path / "out.bin"
    with pytest.raises(OSError) as caught:
        with OutputFile.create(path) as f:
            for piece in _payload([BUFFER_BYTES] * 4):
                f.write(piece)
    assert caught.value.errno == errno.ENOSPC
    assert not [t for t in threading.enumerate() if t.name.startswith("grokweights-export-io")]


@pytest.mark.parametrize("fmt", ["gguf", "sglang"])
def test_direct_and_buffered_exports_are_the_same_bytes(tiny_checkpoint, tmp_path, monkeypatch, fmt):
    from grokweights.engines import export

    digests = {}
    for mode in ("direct", "buffered"):
        monkeypatch.setenv(IO_ENV, mode)
        dst = tmp_path / mode / ("tiny.gguf" if fmt == "gguf" else "tiny")
        report = export(tiny_checkpoint, dst, format=fmt, dtype="bf16", verify=False)
        files = sorted(p for f in report.files for p in ([f] if os.path.isfile(f) else
                                                          [os.path.join(f, n) for n in os.listdir(f)]))
        digests[mode] = {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in files}
    assert digests["direct"] == digests["buffered"] and digests["direct"]
