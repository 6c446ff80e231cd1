"""fetch / seed over real libtorrent sessions in separate processes, on 127.0.0.1 only.

DHT, local peer discovery, UPnP and NAT-PMP are off in every process and peers are connected explicitly
(``--peer`` or the ``x.pe`` peer in the seeder's magnet link).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grokweights import preset
from grokweights.constants import LOCAL_MANIFEST_NAME

from .test_torrent_helpers import LOOPBACK, Proc, bencode, fetch_args, sha256_of, start_seeder

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A tiny synthetic checkpoint with its manifest: ``SRC/tiny/{ckpt-0/, grokweights-manifest.json}``."""
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize

    root = tmp_path_factory.mktemp("src") / "tiny"
    synthesize(root, preset("tiny"))
    create_manifest(root, name="tiny", config=preset("tiny")).save(root / LOCAL_MANIFEST_NAME)
    return root


@pytest.fixture(scope="module")
def seeder(source):
    proc, magnet, peer = start_seeder(source)
    yield magnet, peer, source
    proc.stop()


def _run(args: list[str], timeout: float = 90, env: dict[str, str] | None = None) -> tuple[int, Proc]:
    proc = Proc(*args, env=env)
    rc = proc.finish(timeout)
    return rc, proc


def test_magnet_only_fetch_verifies_and_json_events_parse(seeder, tmp_path):
    magnet, _, source = seeder
    assert "x.pe=127.0.0.1:" in magnet
    rc, proc = _run(fetch_args(magnet, tmp_path / "dl"))
    assert rc == 0, proc.stderr()
    assert all(line.startswith("{") for line in proc.stdout_lines)  # every stdout line is one JSON event
    kinds = [e["event"] for e in proc.events]
    assert kinds[0] == "start" and kinds[-1] == "summary" and "selected" in kinds and "verified" in kinds
    states = [e["state"] for e in proc.events if e["event"] == "state"]
    assert "downloading" in states and states[-1] == "finished"
    summary = proc.summary()
    assert summary["ok"] and summary["hash_failures"] == 0 and summary["total_files"] == 27
    # the progress event at the end of the download says where the payload came from: all from the seeder
    last = [e for e in proc.events if e["event"] == "progress"][-1]
    assert set(last["by_peer"]) == {"127.0.0.1"}
    assert last["by_peer"]["127.0.0.1"][0] == last["downloaded"] == summary["downloaded_bytes"] > 0
    completed = {e["path"] for e in proc.events if e["event"] == "file_completed"}
    assert len(completed) == 27
    manifest_check = summary["verification"]["manifest"]
    assert manifest_check["counts"] == {"ok": 26}  # sha256 of every shard, from the manifest in the torrent
    dl = tmp_path / "dl"
    assert (dl / f"{summary['infohash']}.torrent").is_file()  # metadata saved beside the data
    for f in (source / "ckpt-0").iterdir():
        assert sha256_of(dl / "tiny" / "ckpt-0" / f.name) == sha256_of(f)
    # the saved .torrent lets `seed` serve the download again, with the same infohash
    reseed, magnet2, _ = start_seeder(dl)
    reseed.stop()
    assert magnet2.split("&")[0] == magnet.split("&")[0]


def test_selective_fetch_gets_only_the_chosen_files(seeder, tmp_path):
    magnet, peer, _ = seeder
    dest = tmp_path / "dl"
    rc, proc = _run(fetch_args(magnet, dest, "--include", "ckpt-0/tensor0000[0-2]_000", "--peer", peer))
    assert rc == 0, proc.stderr()
    summary = proc.summary()
    assert sorted(f["path"] for f in summary["files"]) == [
        "tiny/ckpt-0/tensor00000_000", "tiny/ckpt-0/tensor00001_000", "tiny/ckpt-0/tensor00002_000",
        "tiny/grokweights-manifest.json"]
    assert summary["verification"]["manifest"]["counts"] == {"ok": 3}
    present = sorted(p.name for p in (dest / "tiny" / "ckpt-0").iterdir() if p.stat().st_blocks > 0)
    assert present == ["tensor00000_000", "tensor00001_000", "tensor00002_000"]


def test_layers_select_through_the_manifest(seeder, tmp_path):
    magnet, _, source = seeder
    rc, proc = _run(fetch_args(magnet, tmp_path / "dl", "--layers", "1", "--manifest",
                               str(source / LOCAL_MANIFEST_NAME)))
    assert rc == 0, proc.stderr()
    summary = proc.summary()
    manifest = json.loads((source / LOCAL_MANIFEST_NAME).read_text())
    layer1 = {f"tiny/{s['path']}" for s in manifest["shards"]
              if "decoder_layer_1/" in s["tensor"]["path"] or "decoder_layer" not in s["tensor"]["path"]}
    assert {f["path"] for f in summary["files"]} == layer1 | {f"tiny/{LOCAL_MANIFEST_NAME}"}
    assert summary["verification"]["manifest"]["counts"] == {"ok": 14}


def test_dry_run_and_preflight(seeder, tmp_path):
    magnet, _, _ = seeder
    dest = tmp_path / "dl"
    rc, proc = _run(fetch_args(magnet, dest, "--dry-run"))
    assert rc == 0, proc.stderr()
    summary = proc.summary()
    assert summary["dry_run"] and summary["downloaded_bytes"] == 0 and summary["needed_bytes"] > 1_000_000
    assert summary["free_bytes"] > 0 and len(summary["files"]) == 27
    assert not (dest / "tiny").exists()  # nothing fetched
    torrent = next(dest.glob("*.torrent"))  # ... but the metadata is kept for the next run
    rc, proc = _run(fetch_args(str(torrent), tmp_path / "small"), env={"GROKWEIGHTS_FREE_SPACE_BYTES": "1000"})
    err = proc.stderr()
    assert rc == 1 and "not enough free space" in err and "1,000 available" in err
    assert str(tmp_path / "small") in err and f"{summary['needed_bytes']:,} bytes still to fetch" in err
    assert not (tmp_path / "small" / "tiny").exists()


def test_human_output_and_exit_codes(seeder, tmp_path):
    magnet, peer, _ = seeder
    rc, proc = _run(["fetch", magnet, "--dest", str(tmp_path / "h"), "--listen", LOOPBACK, "--no-dht", "-q"])
    assert rc == 0, proc.stderr()
    out = "\n".join(proc.stdout_lines)
    assert "verified: ok" in out and "27 files" in out
    rc, proc = _run(["fetch", magnet, "--dest", str(tmp_path / "x"), "--peer", "nonsense"])
    assert rc == 2 and "HOST:PORT" in proc.stderr()
    rc, proc = _run(["fetch", str(tmp_path / "missing.torrent"), "--dest", str(tmp_path / "x")])
    assert rc == 2 and "does not exist" in proc.stderr()
    dead = "magnet:?xt=urn:btih:" + "ab" * 20
    rc, proc = _run(["fetch", dead, "--dest", str(tmp_path / "x"), "--layers", "0", "--no-dht"])
    assert rc == 2 and "--layers needs a manifest" in proc.stderr()
    rc, proc = _run(["fetch", dead, "--dest", str(tmp_path / "x"), "--listen", LOOPBACK, "--no-dht",
                     "--stall-timeout", "2"])
    assert rc == 1 and "no progress for 2 s" in proc.stderr()


def test_path_escaping_torrent_is_refused(tmp_path):
    info = {"name": "ckpt", "piece length": 16384, "pieces": b"\0" * 20,
            "files": [{"path": ["..", "..", "escaped"], "length": 10}]}
    evil = tmp_path / "evil.torrent"
    evil.write_bytes(bencode({"info": info}))
    dest = tmp_path / "a" / "b"
    rc, proc = _run(["fetch", str(evil), "--dest", str(dest), "--listen", LOOPBACK, "--no-dht"])
    err = proc.stderr()
    assert rc == 1 and "refusing file 'ckpt/../../escaped'" in err
    assert not (tmp_path / "escaped").exists() and not (dest / "ckpt").exists()
    rc, proc = _run(["seed", str(tmp_path), "--torrent", str(evil), "--listen", LOOPBACK, "--no-dht"])
    assert rc != 0


def test_seed_refuses_a_copy_that_fails_its_check(source, tmp_path):
    import shutil

    bad = tmp_path / "tiny"
    shutil.copytree(source, bad)
    shard = bad / "ckpt-0" / "tensor00003_000"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    good_torrent = next(source.glob("*.torrent"), None) or _make_torrent(source, tmp_path / "good.torrent")
    rc, proc = _run(["seed", str(bad), "--torrent", str(good_torrent), "--listen", LOOPBACK, "--no-dht"])
    err = proc.stderr()
    assert rc == 1 and "refusing to seed" in err and "tensor00003_000" in err


def _make_torrent(directory: Path, out: Path) -> Path:
    from grokweights.torrent import create_torrent

    return create_torrent(directory, out)


def test_fetch_from_a_manifest_writes_it_beside_ckpt0_and_can_keep_seeding(source, tmp_path):
    """SOURCE = a manifest whose magnet link points at a seeder of the bare ckpt-0 (no manifest inside)."""
    import shutil
    from dataclasses import replace

    from grokweights.checkpoint.manifest import Sources, load_manifest

    bare = tmp_path / "bare" / "tiny"
    shutil.copytree(source / "ckpt-0", bare / "ckpt-0")
    proc, magnet, _ = start_seeder(bare)
    try:
        manifest = load_manifest(source / LOCAL_MANIFEST_NAME)
        mine = replace(manifest, sources=Sources(magnet=magnet))
        path = mine.save(tmp_path / "mine.json")
        rc, fetcher = _run(fetch_args(str(path), tmp_path / "dl", "--seed-time", "1"))
        assert rc == 0, fetcher.stderr()
        summary = fetcher.summary()
        local = tmp_path / "dl" / "tiny" / LOCAL_MANIFEST_NAME
        assert summary["manifest"] == str(local) and load_manifest(local).shards == manifest.shards
        assert summary["verification"]["manifest"]["counts"] == {"ok": 26}
        assert [e["state"] for e in fetcher.events if e["event"] == "state"][-1] == "seeding"
    finally:
        proc.stop()


def test_library_api_seed_and_fetch_in_one_process(source, tmp_path):
    """What the demo does: a Seeder session and a fetch session in one process, by magnet link."""
    from grokweights.checkpoint.manifest import load_manifest
    from grokweights.checkpoint.verify import verify
    from grokweights.torrent import Seeder, fetch

    events = []
    with Seeder(source, listen=LOOPBACK, discovery=False) as seeder:
        assert seeder.endpoint[0] == "127.0.0.1" and seeder.port > 0
        report = fetch(seeder.magnet, tmp_path / "dl", listen=LOOPBACK, discovery=False, stall_timeout=60,
                       on_event=events.append)
    assert report.ok and report.checkpoint == str(tmp_path / "dl" / "tiny")
    assert report.downloaded_bytes >= report.selected_bytes and report.hash_failures == 0
    assert {"start", "selected", "verified"} <= {e["event"] for e in events}
    again = verify(report.checkpoint, load_manifest(source / LOCAL_MANIFEST_NAME))
    assert again.ok and again.counts() == {"ok": 26}
