"""Hostile input, campaign 2: a peer that serves corrupt data (issue 17, defect 22).

``--stall-timeout`` holds: bytes that fail their hash are not progress (before, a corrupt peer's pieces kept the
stall clock moving: 134 s and 113 bans for a limit of 20 s). A banned peer stays banned: grokweights does not dial
it again, and its address is blocked unless another peer it was given shares it.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from grokweights.torrent import create_torrent

from .test_torrent_helpers import Proc, corrupt_every_piece, fetch_args, start_seeder, write_random_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PIECE = 16 * 1024


def test_the_stall_limit_holds_against_a_corrupt_peer(tmp_path):
    src = tmp_path / "bad" / "ck"
    write_random_files(src, [4 * 1024 * 1024], seed=8)
    torrent = create_torrent(src, tmp_path / "ck.torrent", piece_size=PIECE)
    seeder, _, peer = start_seeder(src, "--torrent", str(torrent))  # passes its check; then its disk goes bad
    try:
        corrupt_every_piece(src, PIECE)
        os.sync()
        started = time.monotonic()
        proc = Proc(*fetch_args(str(torrent), tmp_path / "dl", "--peer", peer, "--stall-timeout", "10"))
        code = proc.finish(200)
        took = time.monotonic() - started
    finally:
        seeder.stop()
    stderr = proc.stderr()
    assert code == 1, stderr
    assert "no progress for 10 s" in stderr, stderr
    bans = [e["time"] for e in proc.events if e["event"] == "peer_banned"]
    failures = [e["time"] for e in proc.events if e["event"] == "hash_failed"]
    assert bans and failures, proc.events[-5:]
    # once banned, the peer sends nothing more (its address is blocked: it came back from new ports before);
    # only pieces already in flight may still fail
    assert max(failures) - min(bans) < 3, f"pieces kept failing {max(failures) - min(bans):.0f} s after the ban"
    assert took < 60, f"took {took:.0f} s with --stall-timeout 10"
    shutil.rmtree(tmp_path / "dl", ignore_errors=True)
