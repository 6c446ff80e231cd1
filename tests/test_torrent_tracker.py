"""Peers found through a tracker: ``seed`` announces the trackers of its ``.torrent`` and ``fetch`` (no ``--peer``)
finds it there. The tracker is the tests' own (tests/tracker.py) on 127.0.0.1; DHT and local discovery are off."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from grokweights.torrent import create_torrent

from .test_torrent_helpers import Proc, fetch_args, sha256_of, start_seeder, write_random_files
from .tracker import Tracker, bound_addresses

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def wait_listed(tracker: Tracker, infohash: str, peer: tuple[str, int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while peer not in tracker.peers_of(infohash):
        assert time.monotonic() < deadline, (f"{peer} never announced to the tracker within {timeout} s "
                                             f"(announces: {tracker.announces})")
        time.sleep(0.2)


@pytest.mark.parametrize("by", ["torrent", "magnet"])
def test_fetch_finds_seed_through_the_tracker(tmp_path, by):
    src = tmp_path / "src" / "ck"
    digests = write_random_files(src, [2 * 1024 * 1024, 300_000], seed=4)
    with Tracker() as tracker:
        torrent = create_torrent(src, tmp_path / "ck.torrent", piece_size=256 * 1024, trackers=[tracker.url])
        seeder, magnet, peer = start_seeder(src, "--torrent", str(torrent))
        try:
            port = int(peer.rsplit(":", 1)[1])
            assert bound_addresses(port) == {"127.0.0.1"}, "the seeder listens beyond loopback"
            assert f"tr={quote(tracker.url, safe='')}" in magnet
            infohash = magnet.split("btih:")[1][:40]
            wait_listed(tracker, infohash, ("127.0.0.1", port))
            source = str(torrent) if by == "torrent" else magnet.split("&x.pe=")[0]  # the magnet without its peer
            fetch = Proc(*fetch_args(source, tmp_path / "dl"))  # no --peer: the tracker is the only way
            assert fetch.finish(120) == 0, fetch.stderr()
            assert fetch.summary()["ok"]
        finally:
            seeder.stop()
        assert {a["port"] for a in tracker.announces if a["port"] != port}, "fetch never announced"
    for rel, digest in digests.items():
        assert sha256_of(tmp_path / "dl" / "ck" / rel) == digest


def test_seeder_keeps_the_trackers_and_web_seeds_of_its_torrent(tmp_path):
    from grokweights.torrent import Seeder

    src = tmp_path / "src" / "ck"
    write_random_files(src, [300_000], seed=5)
    mirror, tracker = "http://127.0.0.1:9/mirror/", "http://127.0.0.1:9/announce"
    torrent = create_torrent(src, tmp_path / "ck.torrent", trackers=[tracker], web_seeds=[mirror])
    with Seeder(src, torrent=torrent, listen="127.0.0.1:0", discovery=False) as seeder:
        handle = seeder.run.handle
        assert [t["url"] for t in handle.trackers()] == [tracker]
        assert mirror in handle.url_seeds()
        assert f"tr={quote(tracker, safe='')}" in seeder.magnet
