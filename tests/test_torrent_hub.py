"""``fetch --hub``: a local imitation of the model hub (tests/fakehub.py) beside a real libtorrent seeder.

The hub serves the shards at its repository's root (``ckpt-0/…``) while the torrent holds them below its
top folder, with a file the hub lacks (``README.txt``). Every process is on 127.0.0.1, DHT/LSD off.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from grokweights import preset
from grokweights.constants import LOCAL_MANIFEST_NAME

from .fakehub import COMMIT, FakeHub, repo_from_folder
from .test_torrent_helpers import GW, Proc, fetch_args, sha256_of, start_seeder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = "xai-org/grok-1"
PIECE = 16 * 1024


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """``src/tiny/{README.txt, ckpt-0/}``, its torrent, a manifest naming it (no sha256), and the hub's copy
    of the shards alone (``hub/ckpt-0/``)."""
    from grokweights.checkpoint.manifest import Sources
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.torrent import create_torrent, describe_torrent

    base = tmp_path_factory.mktemp("release")
    src = base / "src" / "tiny"
    synthesize(src, preset("tiny"))
    (src / "README.txt").write_text("the release notes\n" * 300)
    torrent = create_torrent(src, base / "tiny.torrent", piece_size=PIECE)
    info = describe_torrent(torrent)
    manifest = create_manifest(src, name="tiny", config=preset("tiny"))
    manifest = replace(manifest, sources=Sources(magnet=info.magnet, infohash_v1=info.infohash))
    hashed = manifest.save(base / "hashed.json")  # for --reshard, whose store records the sha256 it read
    manifest = replace(manifest, shards=tuple(replace(s, sha256=None) for s in manifest.shards))
    hub = base / "hub"
    shutil.copytree(src / "ckpt-0", hub / "ckpt-0")
    return {"src": src, "torrent": torrent, "infohash": info.infohash, "manifest": manifest.save(base / "m.json"),
            "hub": hub, "hashed": hashed, "bytes": sum(p.stat().st_size for p in src.rglob("*") if p.is_file())}


def _hub(root: Path, **kw) -> FakeHub:
    return FakeHub({REPO: repo_from_folder(root)}, files={REPO: root}, **kw)


@contextlib.contextmanager
def _beside_a_seeder(release, upload: str, **hub_options) -> Iterator[tuple[FakeHub, str]]:
    """A seeder of the release limited to ``upload`` per second and the hub lacking a file: ``(hub, peer)``."""
    seeder, _, peer = start_seeder(release["src"], "--torrent", str(release["torrent"]), "--max-upload-rate", upload)
    try:
        with _hub(release["hub"], **hub_options) as hub:
            yield hub, peer
    finally:
        seeder.stop()


def _fetch(release, dest: Path, hub: FakeHub, *extra: str, source: str | None = None, env=None) -> Proc:
    args = fetch_args(source or str(release["torrent"]), dest, "--manifest", str(release["manifest"]),
                      "--hub", REPO, *extra)
    return Proc(*args, env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret", **(env or {})})


def _same(release, dest: Path) -> None:
    for path in release["src"].rglob("*"):
        if path.is_file():
            assert sha256_of(dest / "tiny" / path.relative_to(release["src"])) == sha256_of(path), path


def _done(proc: Proc, timeout: float = 150) -> dict:
    assert proc.finish(timeout) == 0, proc.stderr()
    summary = proc.summary()
    assert summary["ok"], summary["verification"]
    return summary


def test_hub_alone_serves_the_torrent_proves_it_and_pins_both_provenances(release, tmp_path):
    rate = 400_000
    with _hub(release["src"]) as hub:  # this hub has every file of the torrent, gated: the token is needed
        hub.token = "hf_secret"
        summary = _done(_fetch(release, tmp_path / "dl", hub, "--max-download-rate", str(rate)))
        proc = _fetch(release, tmp_path / "x", hub, env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "none")})
        assert proc.finish(60) == 1 and "HTTP 401" in (err := proc.stderr()) and "HF_TOKEN" in err
        # a wrong repository or revision is one line before anything is fetched
        for wrong, code in (("xai-org/grok-2", "RepoNotFound"), (f"{REPO}@v9", "RevisionNotFound")):
            proc = Proc(*fetch_args(str(release["torrent"]), tmp_path / "x", "--hub", wrong),
                        env={"HF_ENDPOINT": hub.url})
            assert proc.finish(60) == 1
            assert f"hub {wrong if '@' in wrong else wrong + '@main'} at {hub.url}" in proc.stderr(), code
    _same(release, tmp_path / "dl")
    assert summary["seconds"] >= 0.7 * release["bytes"] / rate  # the download limit holds for the hub too
    stats = summary["extra"]["hub"]
    assert stats["resolves"] <= 2 * 27  # the content server's URL is reused: not a resolve per piece
    assert stats["commit"] == COMMIT and stats["peer_bytes"] == 0 and stats["bad_pieces"] == []
    assert stats["hub_bytes"] >= release["bytes"] and stats["sha256_pinned"] == 26
    local = json.loads((tmp_path / "dl" / "tiny" / LOCAL_MANIFEST_NAME).read_text())
    sources = {s["sha256_source"] for s in local["shards"]}
    assert sources == {f"torrent:{release['infohash']} hub:{REPO}@{COMMIT}"}
    # requests follow the hub's layout: resolve at the pinned commit, content on the redirected host
    assert any(f"/{REPO}/resolve/{COMMIT}/ckpt-0/tensor00000_000" in r for r in hub.requests)
    assert any("/resolve/" in p and a == "Bearer hf_secret" for p, a in hub.auth)
    assert all(a is None for p, a in hub.auth if "/content/" in p)  # the token stays with the hub's host


def test_a_hub_listing_another_sha256_fails_the_fetch_naming_both(release, tmp_path):
    shards = json.loads(release["manifest"].read_text())["shards"]
    wrong = next(s["path"] for s in shards if "decoder_layer_1/" in s["tensor"]["path"])
    other = "0123456789abcdef" * 4
    with _hub(release["src"]) as hub:
        hub.etag[wrong] = other
        proc = _fetch(release, tmp_path / "dl", hub)
        assert proc.finish(120) == 1
    summary = proc.summary()
    assert not summary["ok"]
    problems = summary["verification"]["problems"]
    real = sha256_of(release["src"] / wrong)
    assert problems == [{"path": wrong, "status": "hub_sha256_differs", "expected": real, "actual": other}]
    local = json.loads((tmp_path / "dl" / "tiny" / LOCAL_MANIFEST_NAME).read_text())
    pinned = {s["path"]: s["sha256_source"] for s in local["shards"] if s["sha256"]}
    assert len(pinned) == 26 and pinned[wrong] == f"torrent:{release['infohash']}"  # the torrent's proof stands
    assert sum(v.endswith(f"hub:{REPO}@{COMMIT}") for v in pinned.values()) == 25


def test_the_bridge_serves_only_its_own_libtorrent(release):
    import urllib.error
    import urllib.request

    from grokweights.torrent.hubhttp import parse_hub
    from grokweights.torrent.hubseed import HubBridge

    with _hub(release["src"]) as hub:
        bridge = HubBridge(parse_hub(REPO, endpoint=hub.url), token="hf_secret")
        try:
            bridge.set_layout("tiny", [("tiny/ckpt-0/tensor00000_000", 0, 131234)], PIECE)
            port = bridge.server.server_address[1]
            with pytest.raises(urllib.error.HTTPError, match="403"):  # no secret: nothing, and no token spent
                urllib.request.urlopen(f"http://127.0.0.1:{port}/grokweights-hub/g1/tiny/ckpt-0/tensor00000_000")
            url = bridge.url + "tiny/ckpt-0/tensor00000_000"
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=5-9"})) as resp:
                data = (release["src"] / "ckpt-0" / "tensor00000_000").read_bytes()[5:10]
                assert resp.status == 206 and resp.read() == data
        finally:
            bridge.close()
    assert bridge.bytes_served == 5 and len([p for p, a in hub.auth if a == "Bearer hf_secret"]) == 1


def test_peers_and_hub_side_by_side_hub_lacking_a_file(release, tmp_path):
    # both slow enough that the hub's later start (its bridge is attached once the selection is applied) leaves
    # it a fair share of the download
    with _beside_a_seeder(release, "100K", rate=100_000) as (hub, peer):
        proc = _fetch(release, tmp_path / "dl", hub, "--peer", peer)
        summary = _done(proc)
    _same(release, tmp_path / "dl")
    stats = summary["extra"]["hub"]
    assert stats["hub_bytes"] > 50_000 and stats["peer_bytes"] > 50_000, stats
    assert stats["hub_bytes"] + stats["peer_bytes"] == summary["downloaded_bytes"]
    assert not any("README" in r and "/content/" in r for r in hub.requests)  # README.txt: from the peer
    progress = [e for e in proc.events if e["event"] == "progress"]
    assert progress and {"hub_bytes", "peer_bytes"} <= set(progress[-1])


def test_a_flipped_byte_from_the_hub_is_refused_and_fetched_from_peers(release, tmp_path):
    with _beside_a_seeder(release, "50K") as (hub, peer):
        # one byte in every piece that lies inside this file alone (wherever libtorrent asks the hub first)
        hub.corrupt["ckpt-0/tensor00002_000"] = set(range(PIECE + 4000, 181945 - PIECE - 4000, PIECE))
        proc = _fetch(release, tmp_path / "dl", hub, "--peer", peer)
        summary = _done(proc)
    _same(release, tmp_path / "dl")
    failed = [e for e in proc.events if e["event"] == "hash_failed"]
    assert failed and all(e["source"] == "hub" for e in failed)
    stats = summary["extra"]["hub"]
    assert summary["hash_failures"] >= 1 and stats["bad_pieces"] == sorted({e["piece"] for e in failed})
    assert set(stats["bad_pieces"]) <= set(summary["extra"]["failed_pieces"])
    assert "failed its hash check" in stats["not_served"]["ckpt-0/tensor00002_000"]


def test_a_hub_that_disappears_mid_download(release, tmp_path):
    with _beside_a_seeder(release, "150K", rate=150_000) as (hub, peer):
        proc = _fetch(release, tmp_path / "dl", hub, "--peer", peer)
        proc.wait_event(lambda e: e["event"] == "progress" and e.get("hub_bytes", 0) > 100_000, timeout=60)
        hub.vanish()
        summary = _done(proc)
    _same(release, tmp_path / "dl")
    stats = summary["extra"]["hub"]
    assert stats["errors"].get("no answer", 0) >= 1 and stats["peer_bytes"] > 100_000, stats


def test_a_redirect_loop_is_refused_and_peers_serve_that_file(release, tmp_path):
    # the hub fast next to a slow peer: libtorrent asks it for every file
    with _beside_a_seeder(release, "50K") as (hub, peer):
        hub.loop.add("ckpt-0/tensor00000_000")
        summary = _done(_fetch(release, tmp_path / "dl", hub, "--peer", peer))
    _same(release, tmp_path / "dl")
    stats = summary["extra"]["hub"]
    assert "redirect loop" in stats["not_served"]["ckpt-0/tensor00000_000"]
    assert stats["hub_bytes"] > 0 and stats["sha256_pinned"] == 25  # the looping file's sha256 is not pinned


def test_a_busy_hub_is_backed_off_while_peers_keep_going(release, tmp_path):
    with _beside_a_seeder(release, "50K") as (hub, peer):
        hub.busy = [(429, 2), (503, 2)]
        proc = _fetch(release, tmp_path / "dl", hub, "--peer", peer)
        summary = _done(proc)
    _same(release, tmp_path / "dl")
    stats = summary["extra"]["hub"]
    assert stats["errors"].get("429") == 1 and stats["errors"].get("503") == 1, stats
    assert stats["hub_bytes"] > 100_000 and stats["peer_bytes"] > 0, json.dumps(stats)  # the hub again, after


def test_dead_swarm_metadata_from_torrent_file_or_refused_or_by_hub_sha256(release, tmp_path):
    with _hub(release["src"]) as hub:
        manifest = str(release["manifest"])
        # no peer, no .torrent: refused with the ways to get the metadata
        proc = _fetch(release, tmp_path / "a", hub, "--metadata-timeout", "2", source=manifest)
        assert proc.finish(60) == 1
        err = proc.stderr()
        assert "no metadata from peers within 2 s" in err and "--torrent FILE" in err and "--hub-sha256-only" in err
        # the user's .torrent gives the metadata: the hub alone serves it, proven piece by piece
        summary = _done(_fetch(release, tmp_path / "b", hub, "--torrent", str(release["torrent"]), source=manifest))
        assert summary["extra"]["hub"]["hub_bytes"] >= release["bytes"]
        _same(release, tmp_path / "b")
        # ... and kept in DEST as <infohash>.torrent, where the next run finds it
        summary = _done(_fetch(release, tmp_path / "b", hub, "--metadata-timeout", "2", source=manifest))
        assert summary["resumed_bytes"] == release["bytes"] and summary["downloaded_bytes"] == 0
        # asked explicitly: by the hub's sha256 alone, and said so
        proc = _fetch(release, tmp_path / "c", hub, "--metadata-timeout", "1", "--hub-sha256-only", source=manifest)
        summary = _done(proc)
    assert summary["extra"]["provenance"] == "hub-sha256-only" and "verify" in summary["extra"]["note"]
    assert any(e["event"] == "selected" and e["provenance"] == "hub-sha256-only" for e in proc.events)
    assert summary["downloaded_bytes"] == sum(f["size"] for f in summary["files"])
    local = json.loads((tmp_path / "c" / "tiny" / LOCAL_MANIFEST_NAME).read_text())
    assert {s["sha256_source"] for s in local["shards"]} == {f"hub:{REPO}@{COMMIT}"}
    for shard in local["shards"]:
        assert sha256_of(tmp_path / "c" / "tiny" / shard["path"]) == shard["sha256"]
    # ... cross-checked against the torrent once its metadata is at hand
    check = subprocess.run([*GW, "verify", str(tmp_path / "c" / "tiny"), "--torrent", str(release["torrent"]),
                            "--json"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["counts"] == {"ok": 26}


def _kill_at(proc: Proc, fraction: float) -> int:
    import signal

    event = proc.wait_event(lambda e: e["event"] == "progress" and e["done"] >= fraction * e["wanted"] > 0, 60)
    proc.popen.send_signal(signal.SIGKILL)
    proc.finish(30)
    return event["done"]


def test_kill_9_then_resume_with_the_hub_for_the_torrent_and_by_sha256_alone(release, tmp_path):
    with _hub(release["src"], rate=150_000) as hub:
        # the torrent, from the hub alone: after kill -9 libtorrent re-checks what is there and goes on
        done = _kill_at(_fetch(release, tmp_path / "t", hub), 0.4)
        hub.rate = None
        summary = _done(_fetch(release, tmp_path / "t", hub))
        assert summary["resumed_bytes"] >= done - 2 * 64 * 1024 and summary["extra"]["hub"]["peer_bytes"] == 0
        _same(release, tmp_path / "t")
        # by the hub's sha256 alone, layer 1 only: the partial file is hashed again and continued by Range
        hub.rate = 150_000
        args = ("--metadata-timeout", "1", "--hub-sha256-only", "--layers", "1")
        done = _kill_at(_fetch(release, tmp_path / "s", hub, *args, source=str(release["manifest"])), 0.4)
        hub.rate = None
        summary = _done(_fetch(release, tmp_path / "s", hub, *args, source=str(release["manifest"])))
    assert summary["resumed_bytes"] >= done and summary["downloaded_bytes"] < summary["selected_bytes"]
    assert len(summary["files"]) == 14  # layer 1 + the embedding and the final norm
    for f in summary["files"]:
        assert sha256_of(tmp_path / "s" / f["path"]) == sha256_of(release["src"] / f["shard"])
    assert not list((tmp_path / "s" / ".grokweights" / "hub-partial").rglob("tensor*"))


def test_fetch_reshard_in_one_pass_from_the_hub(release, tmp_path):
    from grokweights.store.reshard import reshard

    from .test_stream import MESH, assert_same_store

    dest, store = tmp_path / "dl", tmp_path / "store"
    with _hub(release["src"]) as hub:
        proc = _fetch({**release, "manifest": release["hashed"]}, dest, hub, "--reshard", str(store), "--mesh", MESH)
        assert proc.finish(150) == 0, proc.stderr()
    summary = proc.summary()
    assert summary["ok"] and len(summary["converted"]) == 26
    assert summary["fetch"]["extra"]["hub"]["hub_bytes"] >= release["bytes"] - 3 * PIECE
    again = tmp_path / "again"
    reshard(dest / "tiny", again, MESH)
    assert_same_store(store, again, same_paths=True)


def test_layers_from_the_hub_fetch_only_those_files(release, tmp_path):
    with _hub(release["src"]) as hub:
        summary = _done(_fetch(release, tmp_path / "dl", hub, "--layers", "1"))
    shards = [f["shard"] for f in summary["files"] if f["shard"]]
    assert len(shards) == 14  # layer 1, the embedding and the final norm
    for shard in shards:
        assert sha256_of(tmp_path / "dl" / "tiny" / shard) == sha256_of(release["src"] / shard)
    wanted = sum(f["size"] for f in summary["files"])
    assert wanted <= summary["extra"]["hub"]["hub_bytes"] <= wanted + 2 * len(shards) * PIECE


class _Proxy:
    """A forward HTTP proxy on 127.0.0.1 that records what it forwarded (as ``HTTP_PROXY`` points to)."""

    def __init__(self) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self, method: str) -> None:
                seen.append(self.path)
                url = urlsplit(self.path)
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "host")}
                conn.request(method, url.path + (f"?{url.query}" if url.query else ""), headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)
                conn.close()

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._forward("HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_hub_through_an_http_proxy_from_the_environment(release, tmp_path):
    proxy = _Proxy()
    try:
        with _hub(release["src"]) as hub:
            summary = _done(_fetch(release, tmp_path / "dl", hub, env={"HTTP_PROXY": proxy.url, "NO_PROXY": ""}))
    finally:
        proxy.close()
    _same(release, tmp_path / "dl")
    assert summary["extra"]["hub"]["hub_bytes"] >= release["bytes"]
    assert any("/resolve/" in p for p in proxy.seen) and any("/content/" in p for p in proxy.seen)
