"""The pure-Python bencoder: strict decoding, encoding, and the infohash from the raw info dict."""

from __future__ import annotations

import hashlib

import pytest

from grokweights.checkpoint.bencode import BencodeError, decode, decode_torrent, encode
from grokweights.checkpoint.torrentfile import parse_torrent, read_torrent
from grokweights.errors import TorrentError


def test_round_trip():
    value = {b"a": 1, b"b": [b"x", -3, {b"k": b""}], b"info": {b"length": 0, b"name": b"n"}}
    data = encode(value)
    assert data == b"d1:ai1e1:bl1:xi-3ed1:k0:ee4:infod6:lengthi0e4:name1:nee"
    assert decode(data) == value
    assert encode({"b": 1, "a": "é"}) == b"d1:a2:\xc3\xa91:bi1ee"


@pytest.mark.parametrize("data, expected", [
    (b"i03e", "canonical integer"),
    (b"i-0e", "canonical integer"),
    (b"ie", "integer (decimal digits)"),
    (b"i1x2e", "integer (decimal digits)"),
    (b"03:abc", "canonical string length"),
    (b"5:abc", "5 bytes of string"),
    (b"d1:bi1e1:ai2ee", "strictly ascending"),
    (b"d1:ai1e1:ai2ee", "strictly ascending"),
    (b"di1ei2ee", "byte-string key"),
    (b"i1ei2e", "end of data after the top-level value"),
    (b"l" * 100 + b"e" * 100, "nesting of at most 64"),
    (b"li1e", "a value"),
    (b"x", "'i', 'l', 'd' or a digit"),
    (b"", "a value"),
])
def test_strict_decoding_names_file_and_problem(data, expected):
    with pytest.raises(BencodeError) as err:
        decode(data, where="bad.torrent")
    assert str(err.value).startswith("bad.torrent: not valid bencode at byte ")
    assert expected in str(err.value)


def test_length_bound():
    with pytest.raises(BencodeError, match="more than the 10 accepted"):
        decode(b"20:" + b"x" * 20, where="big.torrent", max_length=10)


def test_encode_refuses_other_types():
    for bad in (True, 1.5, None, {1: 2}):
        with pytest.raises((TypeError, ValueError)):
            encode(bad)
    with pytest.raises(ValueError, match="twice"):
        encode({"a": 1, b"a": 2})


def test_info_span_and_infohash_match_libtorrent(tmp_path):
    import libtorrent as lt

    import grokweights

    (tmp_path / "rel" / "ckpt-0").mkdir(parents=True)
    (tmp_path / "rel" / "ckpt-0" / "tensor00000_000").write_bytes(b"abc" * 30000)
    (tmp_path / "rel" / "README.md").write_bytes(b"hello")
    path = grokweights.create_torrent(tmp_path / "rel", tmp_path / "rel.torrent", piece_size=16384,
                                      trackers=["http://127.0.0.1:1/announce"], comment="zzz after info")
    data = path.read_bytes()
    top, info = decode_torrent(data, where=str(path))
    ti = lt.torrent_info(str(path))
    assert info == bytes(ti.info_section())
    assert hashlib.sha1(info).hexdigest() == str(ti.info_hashes().v1)
    assert encode(top) == data  # canonical: re-encoding gives the same bytes
    meta = read_torrent(path)
    assert meta.infohash_v1 == str(ti.info_hashes().v1)
    assert meta.name == "rel" and meta.piece_length == 16384 and meta.num_pieces == ti.num_pieces()
    assert [f.path for f in meta.files] == ["README.md", "ckpt-0/tensor00000_000"]
    assert [f.offset for f in meta.files] == [0, 5]


def test_torrent_without_info_or_v1_pieces_is_refused():
    with pytest.raises(BencodeError, match="x.torrent: the torrent has no 'info' dict"):
        decode_torrent(encode({"announce": "u"}), where="x.torrent")
    v2_only = encode({"info": {"name": "n", "piece length": 16384, "meta version": 2, "file tree": {}}})
    with pytest.raises(TorrentError, match="y.torrent: v1 'pieces'"):
        parse_torrent(v2_only, where="y.torrent")
    wrong_count = encode({"info": {"name": "n", "piece length": 16384, "length": 40000, "pieces": b"\0" * 20}})
    with pytest.raises(TorrentError, match="z.torrent: 3 piece hashes for 40000 bytes"):
        parse_torrent(wrong_count, where="z.torrent")
    unsafe = encode({"info": {"name": "n", "piece length": 16384, "pieces": b"\0" * 20,
                              "files": [{"length": 1, "path": ["..", "etc"]}]}})
    with pytest.raises(TorrentError, match="plain path components"):
        parse_torrent(unsafe, where="u.torrent")
