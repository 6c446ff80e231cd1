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


def _gw(*args: str, env: dict[str, str] | None = None, timeout: float = 30):
    import os
    import subprocess
    import sys

    full = {**os.environ, "GROKWEIGHTS_DISABLE_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "grokweights", *args], capture_output=True, text=True,
                          timeout=timeout, env=full, check=False)


def test_dry_run_of_the_default_source_answers_from_the_manifest_without_peers(tmp_path):
    """No peer, no DHT: the shipped manifest answers at once; no session starts, nothing is written."""
    import json
    import time

    from grokweights.checkpoint.manifest import load_manifest

    manifest = load_manifest("grok-1")
    dest = tmp_path / "dl"
    started = time.monotonic()
    result = _gw("fetch", "--dest", str(dest), "--dry-run", "--no-dht", "--listen", LOOPBACK, "--json",
                 env={"GROKWEIGHTS_FREE_SPACE_BYTES": str(10**13)})
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["dry_run"] and summary["extra"]["metadata"] == "pending"
    assert len(summary["files"]) == summary["total_files"] == 770
    assert summary["selected_bytes"] == summary["needed_bytes"] == manifest.total_size
    assert summary["free_bytes"] == 10**13 and summary["files"][0]["path"] == "ckpt-0/tensor00000_000"
    assert not dest.exists() or list(dest.iterdir()) == []  # a dry run creates nothing: no lock, .torrent, data
    human = _gw("fetch", "grok-1", "--dest", str(dest), "--dry-run", "--no-dht", "--listen", LOOPBACK, "--layers", "0",
                env={"GROKWEIGHTS_FREE_SPACE_BYTES": str(10**13)})
    assert human.returncode == 0, human.stderr
    assert "metadata" in human.stdout and "still to come" in human.stdout
    layer0 = {s.path for s in manifest.shards if s.tensor.layer in (None, 0)}
    assert f"{len(layer0)} of 770 files" in human.stdout
    small = _gw("fetch", "--dest", str(dest), "--dry-run", "--no-dht", "--listen", LOOPBACK,
                env={"GROKWEIGHTS_FREE_SPACE_BYTES": "1000"})
    assert small.returncode == 1 and "not enough free space" in small.stderr and "Traceback" not in small.stderr


# ---------------------------------------------------------------------- 6. an unfinished download never verifies

def _manifest_without_sha256(root: Path):
    from dataclasses import replace

    from grokweights import preset
    from grokweights.checkpoint.manifest_ops import create_manifest

    manifest = create_manifest(root, name="tiny", config=preset("tiny"))
    return replace(manifest, shards=tuple(replace(s, sha256=None) for s in manifest.shards))


def test_interrupted_download_is_incomplete_not_ok(tmp_path):
    """A sparse, full-size file of an unfinished fetch: verify (and --deep) say incomplete, never ok."""
    from grokweights import preset
    from grokweights.checkpoint.completion import CompletionRecord, incomplete_shards, write_record
    from grokweights.checkpoint.synth import synthesize
    from grokweights.checkpoint.verify import verify

    dest = tmp_path / "dl"
    top = dest / "tiny"
    synthesize(top, preset("tiny"))
    manifest = _manifest_without_sha256(top)
    assert verify(top, manifest).ok  # no record: judged by sizes alone, as before
    shard = manifest.shards[3].path
    with open(top / shard, "r+b") as f:  # what an interrupted download leaves: full size, a hole of zeros
        f.truncate(100)
        f.truncate(manifest.shards[3].size)
    files = {f"tiny/{s.path}": (s.size, s.path != shard) for s in manifest.shards}
    write_record(dest, CompletionRecord("ab" * 20, "tiny", files))
    for where in (top, top / "ckpt-0"):
        for deep in (False, True):
            report = verify(where, manifest, deep=deep)
            assert not report.ok and [(r.path, r.status) for r in report.failures] == [(shard, "incomplete")]
            assert "re-run the same fetch" in report.failures[0].detail
    assert incomplete_shards(top) == {shard: report.failures[0].detail}
    (dest / ".grokweights" / f"{'ab' * 20}.complete").write_text("{not json")
    assert {r.status for r in verify(top, manifest).results} == {"incomplete"}  # unreadable: nothing complete
    result = _gw("verify", str(top), "--manifest", str(manifest.save(tmp_path / "m.json")))
    assert result.returncode == 1 and "incomplete" in result.stdout + result.stderr


def test_fetch_records_completion_only_when_done(straddling, tmp_path):
    import json

    from grokweights.checkpoint.completion import incomplete_shards, read_record, record_path

    root, torrent = straddling
    dest = tmp_path / "dl"
    seen = []

    def before_data(run) -> None:  # the selection is applied: the record already says incomplete
        seen.append(incomplete_shards(dest / "top"))

    with Seeder(root, torrent=torrent, listen=LOOPBACK, discovery=False) as seeder:
        report = fetch(str(torrent), dest, listen=LOOPBACK, discovery=False, stall_timeout=30,
                       peers=[f"127.0.0.1:{seeder.port}"], include=["*/tensor00000_000"], on_run=before_data)
    assert report.ok
    assert list(seen[0]) == ["ckpt-0/tensor00000_000"]
    record = read_record(record_path(dest, report.infohash))
    assert record.files == {"top/ckpt-0/tensor00000_000": (20_000, True)}
    assert incomplete_shards(dest / "top") == {}
    data = json.loads(record_path(dest, report.infohash).read_text())
    assert data["format"] == "grokweights-completion" and data["name"] == "top"
