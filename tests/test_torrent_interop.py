"""Interoperability with a standard BitTorrent client (aria2c), both ways, on 127.0.0.1 only.

Skipped when ``aria2c`` is not installed (``apt-get install aria2``). aria2c runs with DHT, local peer
discovery and peer exchange off; it finds our seeder through a tiny tracker served by the test.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from grokweights.torrent import create_torrent

from .test_torrent_helpers import Proc, bencode, fetch_args, sha256_of, start_seeder, write_random_files

ARIA2C = shutil.which("aria2c")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120),
              pytest.mark.skipif(ARIA2C is None, reason="aria2c is not installed")]

ARIA2_QUIET = ["--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false", "--enable-peer-exchange=false",
               "--disable-ipv6=true", "--console-log-level=warn", "--summary-interval=0", "--bt-stop-timeout=60",
               "--follow-torrent=false", "--allow-overwrite=true"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch_from_aria2c(src: Path, digests: dict[str, str], torrent: Path, tmp_path: Path) -> None:
    port = _free_port()
    aria = subprocess.Popen([ARIA2C, *ARIA2_QUIET, f"--dir={src.parent}", "--check-integrity=true",
                             "--seed-ratio=0.0", f"--listen-port={port}", "--seed-time=2", str(torrent)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc = Proc(*fetch_args(str(torrent), tmp_path / "dl", "--peer", f"127.0.0.1:{port}"))
        assert proc.finish(90) == 0, proc.stderr()
        assert proc.summary()["ok"]
        for rel, digest in digests.items():
            assert sha256_of(tmp_path / "dl" / "ck" / rel) == digest
    finally:
        aria.kill()
        aria.wait(10)


class _Tracker(BaseHTTPRequestHandler):
    """Answers every announce with one peer: the seeder under test."""

    peer: tuple[str, int] = ("127.0.0.1", 0)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        host, port = self.peer
        body = bencode({"interval": 5, "peers": socket.inet_aton(host) + struct.pack(">H", port)})
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _aria2c_from_our_seeder(src: Path, digests: dict[str, str], torrent: Path, tmp_path: Path) -> None:
    seeder, _, peer = start_seeder(src, "--torrent", str(torrent))
    handler = type("Tracker", (_Tracker,), {"peer": ("127.0.0.1", int(peer.rsplit(":", 1)[1]))})
    tracker = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=tracker.serve_forever, daemon=True).start()
    dl = tmp_path / "aria"
    try:
        announce = f"http://127.0.0.1:{tracker.server_address[1]}/announce"
        result = subprocess.run([ARIA2C, *ARIA2_QUIET, f"--dir={dl}", "--seed-time=0", f"--bt-tracker={announce}",
                                 f"--listen-port={_free_port()}", str(torrent)], capture_output=True, text=True,
                                timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        for rel, digest in digests.items():
            assert sha256_of(Path(dl) / "ck" / rel) == digest
    finally:
        tracker.shutdown()
        seeder.stop()


def test_standard_client_both_ways(tmp_path):
    """Our fetch completes from an aria2c seeder, and aria2c completes from our seeder."""
    src = tmp_path / "src" / "ck"
    digests = write_random_files(src, [3 * 1024 * 1024, 500_000], seed=9)
    torrent = create_torrent(src, tmp_path / "ck.torrent", piece_size=256 * 1024)
    _fetch_from_aria2c(src, digests, torrent, tmp_path)
    _aria2c_from_our_seeder(src, digests, torrent, tmp_path)
