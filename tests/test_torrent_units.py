"""Torrent planning without peers: parsers, torrent creation read back independently, unsafe names,
selection, preflight."""

from __future__ import annotations

import hashlib

import pytest

from grokweights import preset
from grokweights.constants import LOCAL_MANIFEST_NAME
from grokweights.errors import InsufficientSpaceError, TorrentError, UsageError
from grokweights.torrent import create_torrent
from grokweights.torrent.create import piece_size_for
from grokweights.torrent.meta import check_info_dict, torrent_bytes
from grokweights.torrent.select import TorrentFile, preflight, select_files
from grokweights.torrent.session import parse_endpoint, parse_rate, parse_size

from .test_torrent_helpers import bdecode, bencode, write_random_files


def test_parsers():
    assert parse_rate("50M") == 50 * 1024**2
    assert parse_rate("1.5K") == 1536
    assert parse_rate("0") is None and parse_rate(None) is None
    assert parse_size("16MiB", what="piece size") == 16 * 1024**2
    assert parse_endpoint("127.0.0.1:6881") == ("127.0.0.1", 6881)
    assert parse_endpoint("[::1]:80") == ("::1", 80)
    with pytest.raises(UsageError, match="expected bytes"):
        parse_rate("fast")
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_endpoint("127.0.0.1")


def test_piece_size_for_sizes():
    assert piece_size_for(1_000_000) == 256 * 1024
    assert piece_size_for(2 * 1024**3) == 2 * 1024**2
    assert piece_size_for(318_239_886_140) == 16 * 1024**2


def test_created_torrent_reads_back_with_an_independent_decoder(tmp_path):
    """Interoperability: a plain v1 torrent (no pad files, no v2 keys) whose SHA-1 pieces cover the files."""
    root = tmp_path / "grok-mini"
    digests = write_random_files(root, [100_000, 70_000, 1])
    (root / LOCAL_MANIFEST_NAME).write_text("{}")
    (root / ".hidden").write_text("skip me")
    path = create_torrent(root, tmp_path / "x.torrent", piece_size=32 * 1024, web_seeds=["http://127.0.0.1:9/"],
                          trackers=["http://127.0.0.1:9/announce"])
    meta, info_bytes = bdecode(path.read_bytes())
    info = meta[b"info"]
    assert meta[b"url-list"] == [b"http://127.0.0.1:9/"]
    assert meta[b"announce"] == b"http://127.0.0.1:9/announce"
    assert set(info) == {b"name", b"piece length", b"pieces", b"files"}  # v1 only: no "meta version"/"file tree"
    assert info[b"name"] == b"grok-mini" and info[b"piece length"] == 32 * 1024
    files = [(b"/".join(f[b"path"]).decode(), f[b"length"]) for f in info[b"files"]]
    assert [p for p, _ in files] == sorted([LOCAL_MANIFEST_NAME, *digests])
    assert not any(b"attr" in f for f in info[b"files"])
    blob = b"".join((root / p).read_bytes() for p, _ in files)
    pieces = [hashlib.sha1(blob[i:i + 32 * 1024]).digest() for i in range(0, len(blob), 32 * 1024)]
    assert info[b"pieces"] == b"".join(pieces)
    import libtorrent as lt

    assert str(lt.torrent_info(str(path)).info_hashes().v1) == hashlib.sha1(info_bytes).hexdigest()
    default = create_torrent(root)  # default name: DIR/<infohash>.torrent
    assert default == root / f"{hashlib.sha1(bdecode(default.read_bytes())[1]).hexdigest()}.torrent"
    assert create_torrent(root).read_bytes() == default.read_bytes()  # the .torrent in DIR is left out


def test_torrent_bytes_keep_the_info_dict_exact():
    info = bencode({"name": "a", "piece length": 16384, "pieces": b"\0" * 20, "length": 5})
    data = torrent_bytes(info, trackers=["http://t/a", "http://t/b"], web_seeds=["http://w/"], comment="c")
    meta, raw = bdecode(data)
    assert raw == info
    assert meta[b"announce-list"] == [[b"http://t/a"], [b"http://t/b"]] and meta[b"comment"] == b"c"


@pytest.mark.parametrize("files, name", [
    ([{"path": ["..", "evil"], "length": 1}], "ckpt"),
    ([{"path": ["ok", "..", "..", "evil"], "length": 1}], "ckpt"),
    ([{"path": ["/etc", "passwd"], "length": 1}], "ckpt"),
    ([{"path": ["a"], "length": 1}], ".."),
    ([{"path": ["a"], "length": 1}], "a/b"),
    ([{"path": ["", "a"], "length": 1}], "ckpt"),
    ([{"path": ["link"], "length": 0, "attr": "l", "symlink path": ["..", ".."]}], "ckpt"),
])
def test_unsafe_names_are_refused(files, name):
    info = bencode({"name": name, "piece length": 16384, "pieces": b"\0" * 20, "files": files})
    with pytest.raises(TorrentError, match="refusing file"):
        check_info_dict(info, where="evil.torrent")


def test_safe_names_pass():
    info = bencode({"name": "grok-1", "piece length": 16384, "pieces": b"\0" * 20,
                    "files": [{"path": ["ckpt-0", "tensor00000_000"], "length": 1}]})
    check_info_dict(info)


def _table(manifest):
    files = [TorrentFile(i, f"grok/{s.path}", s.size, s.path, "grok") for i, s in enumerate(manifest.shards)]
    return files + [TorrentFile(len(files), "grok/README.md", 10)]


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize

    out = tmp_path_factory.mktemp("tiny")
    synthesize(out, preset("tiny"))
    return create_manifest(out, name="tiny", config=preset("tiny"))


def test_selection_by_glob_and_layers(tiny_manifest):
    files = _table(tiny_manifest)
    assert select_files(files) == files
    chosen = select_files(files, include=["ckpt-0/tensor0000[0-1]_000"])
    assert [f.shard for f in chosen] == ["ckpt-0/tensor00000_000", "ckpt-0/tensor00001_000"]
    assert [f.path for f in select_files(files, include=["README.md"])] == ["grok/README.md"]
    layer1 = select_files(files, layers="1", manifest=tiny_manifest)
    expected = {s.path for s in tiny_manifest.shards if s.tensor.layer in (None, 1)}
    assert {f.shard for f in layer1} == expected and len(expected) == 2 + 12
    with pytest.raises(UsageError, match="needs a manifest"):
        select_files(files, layers="0")
    with pytest.raises(UsageError, match="matches no file"):
        select_files(files, include=["nothing*"])
    with pytest.raises(UsageError, match="does not exist"):
        select_files(files, layers="5", manifest=tiny_manifest)


def test_preflight_reports_needed_available_and_path(tmp_path, monkeypatch):
    files = [TorrentFile(0, "t/a", 5000), TorrentFile(1, "t/b", 3000)]
    assert preflight(tmp_path, files, free=lambda p: 10_000) == (8000, 10_000)
    with pytest.raises(InsufficientSpaceError) as info:
        preflight(tmp_path, files, free=lambda p: 7999)
    assert info.value.expected == 8000 and info.value.actual == 7999 and str(tmp_path) in str(info.value)
    monkeypatch.setenv("GROKWEIGHTS_FREE_SPACE_BYTES", "100")
    with pytest.raises(InsufficientSpaceError, match="8,000 bytes still to fetch"):
        preflight(tmp_path, files)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a").write_bytes(b"x" * 5000)  # already there: only b is still needed
    assert preflight(tmp_path, files, free=lambda p: 3000)[0] <= 3000


def test_default_source_is_the_shipped_grok1_magnet():
    from grokweights.torrent.meta import resolve_source

    src = resolve_source("grok-1")
    assert src.kind == "manifest" and src.manifest.name == "grok-1"
    assert src.magnet.startswith("magnet:?xt=urn:btih:5f96d43576e3d386c9ba65b883210a393b68210e")
    assert resolve_source("magnet:?xt=urn:btih:" + "0" * 40, manifest="grok-1").manifest.name == "grok-1"
    with pytest.raises(UsageError, match="does not exist"):
        resolve_source("nothing.torrent")


def test_peer_bytes_sum_over_connections_and_keep_closed_ones():
    from types import SimpleNamespace as Info

    from grokweights.torrent.peers import PeerBytes

    tally = PeerBytes()
    assert tally.update([]) == {}
    first = [Info(ip=("10.0.0.1", 6881), total_download=100, total_upload=5),
             Info(ip=("10.0.0.2", 50000), total_download=7, total_upload=0)]
    assert tally.update(first) == {"10.0.0.1": [100, 5], "10.0.0.2": [7, 0]}
    # 10.0.0.1's connection closes after 150 bytes (last seen at 100) and it comes back on another port
    again = [Info(ip=("10.0.0.1", 40000), total_download=30, total_upload=1),
             Info(ip=("10.0.0.2", 50000), total_download=9, total_upload=2)]
    assert tally.update(again) == {"10.0.0.1": [130, 6], "10.0.0.2": [9, 2]}
    assert tally.update([]) == {"10.0.0.1": [130, 6], "10.0.0.2": [9, 2]}  # everything closed: kept
