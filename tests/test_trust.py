"""verify by pieces, pin from the torrent and from the hub, and fetch recording what it proved (issue 9).

Torrents are made by libtorrent with 16 KiB pieces, smaller than the tiny checkpoint's larger shards, so
pieces span shard boundaries. The hub is a local HTTP endpoint (tests/fakehub.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

import grokweights
from grokweights.checkpoint.manifest import Sources, load_manifest
from grokweights.checkpoint.torrentfile import read_torrent
from grokweights.cli import main as cli
from grokweights.constants import LOCAL_MANIFEST_NAME

from .fakehub import COMMIT, FakeHub, lfs_entry, repo_from_folder

PIECE = 16 * 1024


@pytest.fixture
def release(tiny_source, tmp_path):
    """``tmp/grok-1/ckpt-0`` (no manifest inside), its torrent, and a manifest of it without sha256."""
    root = tmp_path / "grok-1"
    shutil.copytree(tiny_source / "ckpt-0", root / "ckpt-0")
    torrent = grokweights.create_torrent(root, tmp_path / "release.torrent", piece_size=PIECE)
    infohash = read_torrent(torrent).infohash_v1
    full = load_manifest(tiny_source / LOCAL_MANIFEST_NAME)
    bare = replace(full, shards=tuple(replace(s, sha256=None) for s in full.shards),
                   sources=Sources(infohash_v1=infohash))
    return root, torrent, bare.save(tmp_path / "manifest.json"), full


def run(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_verify_by_pieces_through_cli_and_api(release):
    root, torrent, manifest, _ = release
    code, out = run("verify", root, "--manifest", manifest, "--torrent", torrent, "--json", "--strict")
    assert code == 0, out
    report = json.loads(out)
    assert report["counts"] == {"ok": 26} and {r["method"] for r in report["results"]} == {"pieces"}
    assert report["mode"]["infohash_v1"] == read_torrent(torrent).infohash_v1
    api = grokweights.verify(root, load_manifest(manifest), torrent=torrent)
    assert api.strict_ok and api.results[0].method == "pieces"
    # without the torrent, nothing proves the shards
    assert grokweights.verify(root, load_manifest(manifest)).counts() == {"unverified": 26}


def test_both_methods_and_a_damaged_shard(release):
    root, torrent, manifest, full = release
    both = load_manifest(manifest)
    both = replace(both, shards=full.shards)  # sha256 known too
    report = grokweights.verify(root, both, torrent=torrent)
    assert {r.method for r in report.results} == {"sha256+pieces"} and report.strict_ok
    big = max(full.shards, key=lambda s: s.size)
    data = bytearray((root / big.path).read_bytes())
    data[len(data) // 2] ^= 0x10
    (root / big.path).write_bytes(bytes(data))
    code, out = run("verify", root, "--manifest", manifest, "--torrent", torrent)
    assert code == 1 and big.path in out and "pieces" in out and "fails its SHA-1" in out


def test_wrong_infohash_torrent_is_refused(release, tmp_path):
    root, torrent, manifest, _ = release
    other = tmp_path / "other"
    shutil.copytree(root, other)
    (other / "extra.txt").write_text("not the release")
    wrong = grokweights.create_torrent(other, tmp_path / "other.torrent", piece_size=PIECE)
    expected = read_torrent(torrent).infohash_v1
    actual = read_torrent(wrong).infohash_v1
    code, out = run("verify", root, "--manifest", manifest, "--torrent", wrong)
    assert code == 1 and expected in out and actual in out and "refusing" in out
    code, out = run("manifest", "pin", root, "--manifest", manifest, "--from-torrent", wrong,
                    "-o", tmp_path / "x.json")
    assert code == 1 and expected in out and actual in out and not (tmp_path / "x.json").exists()


def test_torrent_kept_beside_the_data_is_found(release, tmp_path):
    root, torrent, manifest, _ = release
    ih = read_torrent(torrent).infohash_v1
    shutil.copy(torrent, tmp_path / f"{ih}.torrent")  # where fetch keeps it: DEST/<infohash>.torrent
    report = grokweights.verify(root, load_manifest(manifest))
    assert report.counts() == {"ok": 26} and report.mode["torrent"] == str(tmp_path / f"{ih}.torrent")


def test_pin_from_torrent_equals_hashlib_then_verify_uses_sha256(release, tmp_path):
    root, torrent, manifest, _ = release
    out_path = tmp_path / "pinned.json"
    code, out = run("manifest", "pin", root, "--manifest", manifest, "--from-torrent", torrent, "-o", out_path)
    assert code == 0, out
    pinned = load_manifest(out_path)
    ih = read_torrent(torrent).infohash_v1
    for s in pinned.shards:
        assert s.sha256 == sha256_of(root / s.path) and s.sha256_source == f"torrent:{ih}"
    assert json.loads(out_path.read_text())["shards"][0]["sha256_source"] == f"torrent:{ih}"
    report = grokweights.verify(root, pinned)
    assert report.strict_ok and {r.method for r in report.results} == {"sha256"}


def test_pin_from_torrent_lists_failures_and_pins_the_rest(release, tmp_path):
    root, torrent, manifest, full = release
    big = max(full.shards, key=lambda s: s.size)
    data = bytearray((root / big.path).read_bytes())
    data[PIECE + 5] ^= 1
    (root / big.path).write_bytes(bytes(data))
    code, out = run("manifest", "pin", root, "--manifest", manifest, "--from-torrent", torrent,
                    "-o", tmp_path / "p.json")
    assert code == 1 and big.path in out
    pinned = load_manifest(tmp_path / "p.json")
    assert pinned.shard(big.path).sha256 is None
    assert sum(1 for s in pinned.shards if s.sha256) >= 20  # neighbours sharing a failing piece may be left out


def hub_repo(root: Path) -> list[dict]:
    return repo_from_folder(root)


def test_pin_from_hub_and_agreement_with_torrent(release, tmp_path, monkeypatch):
    root, torrent, manifest, _ = release
    with FakeHub({"xai-org/grok-1": hub_repo(root)}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code, out = run("manifest", "pin", "--manifest", manifest, "--from-hub", "xai-org/grok-1",
                        "-o", tmp_path / "hub.json")
        assert code == 0, out
        from_hub = load_manifest(tmp_path / "hub.json")
        assert all(s.sha256 == sha256_of(root / s.path) for s in from_hub.shards)
        assert {s.sha256_source for s in from_hub.shards} == {f"hub:xai-org/grok-1@{COMMIT}"}
        # torrent first, then the hub: both agree, both recorded
        code, out = run("manifest", "pin", root, "--manifest", manifest, "--from-torrent", torrent,
                        "--from-hub", "xai-org/grok-1", "--revision", "main", "-o", tmp_path / "both.json")
        assert code == 0, out
        sources = {s.sha256_source for s in load_manifest(tmp_path / "both.json").shards}
        assert len(sources) == 1 and "torrent:" in sources.pop()


def test_hub_disagreeing_with_torrent_is_refused(release, tmp_path, monkeypatch):
    root, torrent, manifest, full = release
    assert run("manifest", "pin", root, "--manifest", manifest, "--from-torrent", torrent)[0] == 0
    entries = hub_repo(root)
    victim = next(e for e in entries if e["path"] == full.shards[3].path)
    entries[entries.index(victim)] = lfs_entry(victim["path"], "ab" * 32, victim["size"])
    before = Path(manifest).read_text()
    with FakeHub({"xai-org/grok-1": entries}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        code, out = run("manifest", "pin", "--manifest", manifest, "--from-hub", "xai-org/grok-1")
    assert code == 1 and "ab" * 32 in out and sha256_of(root / victim["path"]) in out and victim["path"] in out
    assert Path(manifest).read_text() == before  # nothing written


@pytest.mark.timeout(120)
def test_fetch_records_sha256_from_the_torrent_then_verify_needs_no_torrent(release, tmp_path):
    from grokweights.torrent import Seeder, fetch

    root, torrent, manifest, _ = release
    m = load_manifest(manifest)
    with Seeder(root, torrent=torrent, listen="127.0.0.1:0", discovery=False) as seeder:
        mine = replace(m, sources=Sources(magnet=seeder.magnet, infohash_v1=m.sources.infohash_v1))
        report = fetch(mine.save(tmp_path / "mine.json"), tmp_path / "dl", listen="127.0.0.1:0", discovery=False,
                       stall_timeout=60)
    assert report.ok
    local = load_manifest(tmp_path / "dl" / "grok-1" / LOCAL_MANIFEST_NAME)
    ih = m.sources.infohash_v1
    assert all(s.sha256 and s.sha256_source == f"torrent:{ih}" for s in local.shards)
    assert {r["method"] for r in report.verification.report.to_dict()["results"]} == {"pieces"}
    (tmp_path / "dl" / f"{ih}.torrent").unlink()  # prove it is the pinned sha256 that verifies now
    code, out = run("verify", tmp_path / "dl" / "grok-1", "--strict", "--json")
    assert code == 0, out
    assert {r["method"] for r in json.loads(out)["results"]} == {"sha256"}
