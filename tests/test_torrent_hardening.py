"""Hardening of fetch (issue 13, torrent side): what ``--json`` reports, ``--dry-run`` without peers, and the
completion record that keeps an unfinished download from verifying.

Real libtorrent sessions on 127.0.0.1 (DHT, local peer discovery, UPnP and NAT-PMP off), small data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grokweights.torrent import Seeder, create_torrent, fetch

pytestmark = pytest.mark.timeout(120)

LOOPBACK = "127.0.0.1:0"
PIECE = 16 * 1024


def _write(root: Path, files: dict[str, int]) -> None:
    for rel, size in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(bytes((i * 7 + len(rel)) % 251 for i in range(size)))


@pytest.fixture(scope="module")
def straddling(tmp_path_factory) -> tuple[Path, Path]:
    """``top/`` with a small file inside one piece of its neighbours: fetching them completes it too."""
    root = tmp_path_factory.mktemp("straddle") / "top"
    _write(root, {"ckpt-0/tensor00000_000": 20_000, "ckpt-0/tensor00001_000": 100, "ckpt-0/tensor00002_000": 20_000})
    return root, create_torrent(root, root.parent / "top.torrent", piece_size=PIECE)


def test_file_completed_only_for_selected_files(straddling, tmp_path):
    root, torrent = straddling
    events: list[dict] = []
    with Seeder(root, torrent=torrent, listen=LOOPBACK, discovery=False) as seeder:
        report = fetch(str(torrent), tmp_path / "dl", listen=LOOPBACK, discovery=False, stall_timeout=30,
                       peers=[f"127.0.0.1:{seeder.port}"], include=["*/tensor00000_000", "*/tensor00002_000"],
                       on_event=events.append)
    assert report.ok, report.verification
    completed = sorted(e["path"] for e in events if e["event"] == "file_completed")
    assert completed == ["top/ckpt-0/tensor00000_000", "top/ckpt-0/tensor00002_000"]
