"""Interoperability with a standard BitTorrent client (aria2c), both ways, on 127.0.0.1 only.

Skipped when ``aria2c`` is not installed (``apt-get install aria2``). aria2c runs with DHT, local peer
discovery and peer exchange off; it finds our seeder only through the tracker named in the .torrent (the tests'
own, tests/tracker.py, on 127.0.0.1), to which the seeder announces.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from grokweights.torrent import create_torrent

from .test_torrent_helpers import Proc, fetch_args, sha256_of, start_seeder, write_random_files
from .tracker import Tracker

ARIA2C = shutil.which("aria2c")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120),
              pytest.mark.skipif(ARIA2C is None, reason="aria2c is not installed (apt-get install aria2; .ci/run "
                                 "installs it)")]

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


def _aria2c_from_our_seeder(src: Path, digests: dict[str, str], tmp_path: Path) -> None:
    """aria2c finds our seeder only through the tracker named in the .torrent (the seeder must announce)."""
    with Tracker() as tracker:
        torrent = create_torrent(src, tmp_path / "tracked.torrent", piece_size=256 * 1024, trackers=[tracker.url])
        seeder, _, peer = start_seeder(src, "--torrent", str(torrent))
        dl = tmp_path / "aria"
        try:
            result = subprocess.run([ARIA2C, *ARIA2_QUIET, f"--dir={dl}", "--seed-time=0",
                                     f"--listen-port={_free_port()}", str(torrent)], capture_output=True, text=True,
                                    timeout=90)
            assert result.returncode == 0, result.stdout + result.stderr
        finally:
            seeder.stop()
        seeder_port = int(peer.rsplit(":", 1)[1])
        assert any(a["port"] == seeder_port and a["left"] == 0 for a in tracker.announces), tracker.announces
    for rel, digest in digests.items():
        assert sha256_of(Path(dl) / "ck" / rel) == digest


def test_standard_client_both_ways(tmp_path):
    """Our fetch completes from an aria2c seeder, and aria2c completes from our seeder."""
    src = tmp_path / "src" / "ck"
    digests = write_random_files(src, [3 * 1024 * 1024, 500_000], seed=9)
    torrent = create_torrent(src, tmp_path / "ck.torrent", piece_size=256 * 1024)
    _fetch_from_aria2c(src, digests, torrent, tmp_path)
    _aria2c_from_our_seeder(src, digests, tmp_path)
