"""Recovery over loopback: interrupted downloads resume, corrupt peers are survived, a web seed alone serves.

Separate processes on 127.0.0.1 only; DHT/LSD/UPnP/NAT-PMP off; peers connected explicitly.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from grokweights.torrent import create_torrent

from .test_torrent_helpers import Proc, corrupt_every_piece, fetch_args, sha256_of, start_seeder, write_random_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MiB = 1024 * 1024


def _check_copy(digests: dict[str, str], root: Path) -> None:
    for rel, digest in digests.items():
        assert sha256_of(root / rel) == digest, rel


def _fetch_until(args: list[str], fraction: float, total: int) -> tuple[Proc, int]:
    """Start a fetch and return once its verified bytes pass ``fraction`` of ``total``."""
    proc = Proc(*args)
    event = proc.wait_event(lambda e: e["event"] == "progress" and e["done"] >= fraction * total, timeout=90)
    return proc, event["done"]


def test_interrupted_fetch_resumes_after_sigterm_and_kill_9(tmp_path):
    sizes = [24 * MiB] * 4
    src = tmp_path / "src" / "big"
    digests = write_random_files(src, sizes)
    total = sum(sizes)
    torrent = create_torrent(src, tmp_path / "big.torrent", piece_size=256 * 1024)
    seeder, _, peer = start_seeder(src, "--torrent", str(torrent), "--max-upload-rate", "8M")
    dest = tmp_path / "dl"
    args = fetch_args(str(torrent), dest, "--peer", peer)
    try:
        # 1. SIGTERM: resume data is flushed and marked clean; exit 130
        proc, done1 = _fetch_until(args, 0.2, total)
        proc.popen.send_signal(signal.SIGTERM)
        assert proc.finish(30) == 130
        infohash = torrent.stem if len(torrent.stem) == 40 else proc.events[0]["infohash"]
        state = dest / ".grokweights"
        assert (state / f"{infohash}.resume").is_file() and (state / f"{infohash}.clean").is_file()
        # 2. rerun trusts the clean resume data; kill -9 it later, mid-transfer
        proc, done2 = _fetch_until(args, 0.55, total)
        assert proc.events[0]["trusted_resume"] is True
        assert proc.events[1]["event"] != "progress" or proc.events[1]["done"] >= done1 - 2 * MiB
        proc.popen.send_signal(signal.SIGKILL)
        proc.finish(30)
        assert not (state / f"{infohash}.clean").exists()  # a crash leaves no clean marker
        # 3. rerun: the partial data is re-checked (not trusted), then only the rest is fetched
        proc = Proc(*args)
        assert proc.finish(120) == 0, proc.stderr()
        summary = proc.summary()
        assert proc.events[0]["trusted_resume"] is False
        assert summary["ok"] and summary["verification"]["problems"] == []
        in_flight = 16 * MiB  # pieces requested or written but not yet on disk when killed
        assert summary["downloaded_bytes"] <= total - done2 + in_flight, (summary["downloaded_bytes"], done2)
        assert summary["resumed_bytes"] >= done2 - in_flight
        _check_copy(digests, dest / "big")
    finally:
        seeder.stop()


def test_corrupt_seeder_next_to_a_good_one(tmp_path):
    sizes = [2 * MiB, 2 * MiB]
    good = tmp_path / "good" / "ck"
    digests = write_random_files(good, sizes, seed=3)
    torrent = create_torrent(good, tmp_path / "ck.torrent", piece_size=64 * 1024)
    bad = tmp_path / "bad" / "ck"
    shutil.copytree(good, bad)
    # the bad seeder passes its start-up check, then its disk goes bad underneath it
    bad_seeder, _, bad_peer = start_seeder(bad, "--torrent", str(torrent))
    good_seeder, _, good_peer = start_seeder(good, "--torrent", str(torrent), "--max-upload-rate", "2M")
    try:
        corrupt_every_piece(bad, 64 * 1024)
        os.sync()
        proc = Proc(*fetch_args(str(torrent), tmp_path / "dl", "--peer", bad_peer, "--peer", good_peer))
        assert proc.finish(120) == 0, proc.stderr()
        summary = proc.summary()
        assert summary["ok"]
        assert summary["hash_failures"] >= 1
        assert len([e for e in proc.events if e["event"] == "hash_failed"]) == summary["hash_failures"]
        _check_copy(digests, tmp_path / "dl" / "ck")
    finally:
        bad_seeder.stop()
        good_seeder.stop()


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=a-b`` support (what web seeds ask for)."""

    def log_message(self, *args) -> None:
        pass

    def send_head(self):  # noqa: D102
        spec = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not spec or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, _, last = spec.removeprefix("bytes=").partition("-")
        start = int(first) if first else size - int(last)
        end = min(int(last), size - 1) if first and last else size - 1
        f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return _Limited(f, end - start + 1)


class _Limited:
    def __init__(self, f, n: int) -> None:
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        size = self.n if size < 0 else min(size, self.n)
        data = self.f.read(size)
        self.n -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


def test_web_seed_as_the_only_source(tmp_path):
    sizes = [3 * MiB, 1 * MiB + 123]
    src = tmp_path / "mirror" / "ck"
    digests = write_random_files(src, sizes, seed=5)
    torrent = create_torrent(src, tmp_path / "ck.torrent", piece_size=256 * 1024)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_RangeHandler, directory=str(tmp_path / "mirror")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        proc = Proc(*fetch_args(str(torrent), tmp_path / "dl", "--web-seed", url))
        assert proc.finish(120) == 0, proc.stderr()
        summary = proc.summary()
        assert summary["ok"] and summary["downloaded_bytes"] >= sum(sizes)
        _check_copy(digests, tmp_path / "dl" / "ck")
    finally:
        server.shutdown()
