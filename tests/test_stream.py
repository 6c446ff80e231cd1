"""fetch --reshard and reshard --follow over real libtorrent sessions on 127.0.0.1: the store equals reshard's.

Each test compares the streamed store with ``reshard`` of a complete copy: every array file byte for byte,
and the index but its timestamp (and, where the copies live in different folders, the manifest's path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from grokweights import preset
from grokweights.constants import LOCAL_MANIFEST_NAME, STORE_INDEX_NAME
from grokweights.store.reshard import reshard

from .test_torrent_helpers import LOOPBACK, Proc, fetch_args, start_seeder

pytestmark = pytest.mark.timeout(180)

MESH = "data=1,model=2"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize

    root = tmp_path_factory.mktemp("src") / "tiny"
    synthesize(root, preset("tiny"))
    create_manifest(root, name="tiny", config=preset("tiny")).save(root / LOCAL_MANIFEST_NAME)
    return root


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("ref") / "store"
    reshard(source, dst, MESH)
    return dst


@pytest.fixture(scope="module")
def seeder(source):
    proc, magnet, peer = start_seeder(source)
    yield magnet, peer
    proc.stop()


@pytest.fixture(scope="module")
def slow_seeder(source, tmp_path_factory):
    """A seeder at 400 kB/s of the shards alone (the manifest is given with --manifest, as for grok-1): a download
    of the tiny checkpoint takes a few seconds, room for interruptions."""
    bare = tmp_path_factory.mktemp("bare") / "tiny"
    shutil.copytree(source / "ckpt-0", bare / "ckpt-0")
    proc, magnet, peer = start_seeder(bare, "--max-upload-rate", "400K")
    yield magnet, peer
    proc.stop()


def store_files(root: Path) -> dict[str, bytes]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.name.startswith(".grokweights"):
            out[str(path.relative_to(root))] = path.read_bytes()
    return out


def assert_same_store(got: Path, want: Path, *, same_paths: bool = False) -> None:
    """Every array file equal; the index equal but its timestamp and the digest over it (and the manifest's path
    unless ``same_paths``)."""
    a, b = store_files(got), store_files(want)
    assert sorted(a) == sorted(b)
    for key in a:
        if key != STORE_INDEX_NAME:
            assert a[key] == b[key], key
    ia, ib = json.loads(a[STORE_INDEX_NAME]), json.loads(b[STORE_INDEX_NAME])
    for index in (ia, ib):
        index.pop("created")
        index.pop("digest", None)  # the index's own digest covers its timestamp
        if not same_paths:
            index["source"]["manifest"].pop("origin")
    assert ia == ib
    if same_paths:  # byte for byte, but the timestamp line
        lines = [[x for x in raw.decode().splitlines() if '"created"' not in x and '"digest"' not in x] for raw in
                 (a[STORE_INDEX_NAME], b[STORE_INDEX_NAME])]
        assert lines[0] == lines[1]


def stream_args(magnet: str, dest: Path, store: Path, *extra: str) -> list[str]:
    return fetch_args(magnet, dest, "--reshard", str(store), "--mesh", MESH, *extra)


def slow_args(source: Path, magnet: str, dest: Path, store: Path, *extra: str) -> list[str]:
    return stream_args(magnet, dest, store, "--manifest", str(source / LOCAL_MANIFEST_NAME), *extra)


def shards_left(dest: Path) -> list[str]:
    return sorted(p.name for p in (dest / "tiny" / "ckpt-0").glob("tensor*"))


def test_fetch_reshard_equals_reshard_of_the_download(source, slow_seeder, tmp_path):
    magnet, _ = slow_seeder
    dest, store = tmp_path / "dl", tmp_path / "store"
    proc = Proc(*slow_args(source, magnet, dest, store, "--max-download-rate", "200K"))
    assert proc.finish(90) == 0, proc.stderr()
    kinds = [e["event"] for e in proc.events]
    assert kinds[-1] == "summary" and "preflight" in kinds and "indexed" in kinds and "conversion" in kinds
    # converted while downloading: the first shard is converted before the last file completes
    assert kinds.index("converted") < max(i for i, k in enumerate(kinds) if k == "file_completed")
    summary = proc.summary()
    assert summary["ok"] and summary["arrays"] == 40 and len(summary["converted"]) == 26
    assert len(shards_left(dest)) == 26  # without --discard-source the source stays
    again = tmp_path / "again"
    reshard(dest / "tiny", again, MESH)
    assert_same_store(store, again, same_paths=True)


def test_discard_source_leaves_a_complete_store_and_no_shard(seeder, reference, tmp_path):
    magnet, _ = seeder
    dest, store = tmp_path / "dl", tmp_path / "store"
    proc = Proc(*stream_args(magnet, dest, store, "--discard-source"))
    assert proc.finish(90) == 0, proc.stderr()
    assert shards_left(dest) == []
    preflight = next(e for e in proc.events if e["event"] == "preflight")
    assert preflight["discard_source"] and preflight["store_bytes"] > 0 and preflight["source_bytes"] > 0
    assert len([e for e in proc.events if e["event"] == "discarded"]) == 26
    assert_same_store(store, reference)
    # the same command again: nothing to download, nothing to convert
    rerun = Proc(*stream_args(magnet, dest, store, "--discard-source"))
    assert rerun.finish(60) == 0, rerun.stderr()
    assert rerun.summary()["fetch"]["downloaded_bytes"] == 0 and rerun.summary()["converted"] == []
    assert_same_store(store, reference)


def _kill_at(proc: Proc, point: str) -> None:
    """SIGKILL ``proc`` at a point of the stream (early, mid-stream, mid-conversion, after the last shard)."""
    if point == "early":
        proc.wait_event(lambda e: e["event"] == "preflight", timeout=60)
    elif point == "mid-stream":  # files are completing, conversion is starting
        proc.wait_event(lambda e: e["event"] == "file_completed", timeout=60)
    elif point == "mid-conversion":  # one shard is converted, the worker is on the next one
        proc.wait_event(lambda e: e["event"] == "converted", timeout=60)
    elif point == "last-shard":  # the last array is published; the index is (most likely) not yet written
        proc.wait_event(lambda e: e["event"] == "converted" and e["remaining"] == 0, timeout=90)
    elif point == "sigterm":  # a clean stop mid-conversion: resume data saved, exit status 130
        proc.wait_event(lambda e: e["event"] == "converted", timeout=60)
        os.kill(proc.popen.pid, signal.SIGTERM)
        assert proc.finish(60) == 130
        return
    os.kill(proc.popen.pid, signal.SIGKILL)
    proc.finish(30)


@pytest.mark.parametrize("point,discard", [("early", True), ("mid-stream", False), ("mid-conversion", True),
                                           ("last-shard", True), ("sigterm", True)])
def test_kill_9_then_rerun_completes_and_equals(source, slow_seeder, reference, tmp_path, point, discard):
    magnet, _ = slow_seeder
    dest, store = tmp_path / "dl", tmp_path / "store"
    extra = ("--discard-source",) if discard else ()
    first = Proc(*slow_args(source, magnet, dest, store, *extra))
    _kill_at(first, point)
    gone = {e["shard"] for e in first.events if e["event"] == "discarded"}
    rerun = Proc(*slow_args(source, magnet, dest, store, *extra))
    assert rerun.finish(120) == 0, rerun.stderr()
    assert rerun.summary()["ok"]
    assert_same_store(store, reference)
    # a discarded shard whose arrays are complete is not downloaded again (but for the pieces it shares)
    fetch = rerun.summary()["fetch"]
    kept = [f for f in fetch["files"] if Path(f["path"]).name not in gone]
    assert all(Path(f["path"]).name not in gone for f in fetch["files"])
    assert fetch["downloaded_bytes"] <= sum(f["size"] for f in kept) + (len(kept) + 1) * fetch["extra"]["piece_size"]
    if discard:
        assert shards_left(dest) == []


def _corrupt(root: Path, step: int) -> None:
    for path in sorted((root / "ckpt-0").iterdir()):
        data = bytearray(path.read_bytes())
        for offset in range(100, len(data), step):
            data[offset] ^= 0xFF
        path.write_bytes(bytes(data))


def test_a_corrupt_peer_is_never_converted(source, reference, tmp_path):
    from grokweights.torrent import create_torrent

    good = tmp_path / "good" / "tiny"
    shutil.copytree(source, good)
    torrent = create_torrent(good, tmp_path / "tiny.torrent", piece_size=16 * 1024)
    bad = tmp_path / "bad" / "tiny"
    shutil.copytree(good, bad)
    bad_seeder, _, bad_peer = start_seeder(bad, "--torrent", str(torrent))
    good_seeder, _, good_peer = start_seeder(good, "--torrent", str(torrent), "--max-upload-rate", "300K")
    try:
        _corrupt(bad, 16 * 1024)
        os.sync()
        dest, store = tmp_path / "dl", tmp_path / "store"
        # a request a peer drops is re-sent elsewhere after libtorrent's request_timeout (60 s): allow for one
        proc = Proc("fetch", str(torrent), "--dest", str(dest), "--listen", LOOPBACK, "--no-dht", "--json",
                    "--stall-timeout", "150", "--peer", bad_peer, "--peer", good_peer, "--reshard", str(store),
                    "--mesh", MESH)
        assert proc.finish(300) == 0, proc.stderr()
        assert proc.summary()["fetch"]["hash_failures"] >= 1
        assert_same_store(store, reference)  # the arrays equal the good source
    finally:
        bad_seeder.stop()
        good_seeder.stop()


COPIER = """
import os, shutil, sys, time
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(os.path.join(dst, "ckpt-0"), exist_ok=True)
shutil.copy(os.path.join(src, "grokweights-manifest.json"), dst)
for name in sorted(os.listdir(os.path.join(src, "ckpt-0"))):
    data = open(os.path.join(src, "ckpt-0", name), "rb").read()
    with open(os.path.join(dst, "ckpt-0", name), "wb") as f:  # in place, in pieces: the size grows slowly
        for i in range(0, len(data), 1 << 14):
            f.write(data[i:i + (1 << 14)])
            f.flush()
            time.sleep(0.002)
"""


def test_follow_converts_shards_copied_in_slowly(source, reference, tmp_path):
    arriving, store = tmp_path / "arriving", tmp_path / "store"
    arriving.mkdir()
    copier = subprocess.Popen([sys.executable, "-c", COPIER, str(source), str(arriving)])
    try:
        proc = Proc("reshard", str(arriving), str(store), "--mesh", MESH, "--follow", "--settle", "0.5",
                    "--timeout", "60", "--json")
        assert proc.finish(120) == 0, proc.stderr()
    finally:
        copier.wait(timeout=60)
    arrived = [e for e in proc.events if e["event"] == "shard_arrived"]
    converted = [e for e in proc.events if e["event"] == "converted"]
    assert len(arrived) == 26 and len(converted) == 26
    assert_same_store(store, reference)
