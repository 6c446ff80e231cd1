"""Verification by v1 piece hashes, file by file, on real torrents made by libtorrent (pieces span files)."""

from __future__ import annotations

import hashlib
import random
import shutil

import pytest

from grokweights.checkpoint.pieces import (
    PieceHasher,
    check_copy,
    decide,
    file_pieces,
    map_copy,
    read_range,
)
from grokweights.checkpoint.torrentfile import read_torrent

PIECE = 16 * 1024
# none a multiple of the piece size: every boundary falls inside a piece
SIZES = {"ckpt-0/tensor00000_000": 70001, "ckpt-0/tensor00001_000": 50000,
         "ckpt-0/tensor00002_000": 2 * 65536 + 7, "ckpt-0/tensor00003_000": 33333, "tokenizer.model": 9000}


def make_release(root, sizes=SIZES, seed=0):
    """A folder of random files and a libtorrent-made v1 torrent of it (returned: its path)."""
    import grokweights

    rng = random.Random(seed)
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return grokweights.create_torrent(root, root.parent / f"{root.name}.torrent", piece_size=PIECE)


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "grok-1"
    return root, read_torrent(make_release(root))


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def shards(verdicts):
    return {p: v.status for p, v in verdicts.items() if p.startswith("ckpt-0/")}


def test_plan_boundary_and_interior(release):
    root, meta = release
    i = meta.index_of("ckpt-0/tensor00002_000")
    fp = file_pieces(meta, i)
    f = meta.files[i]
    assert fp.first == f.offset // PIECE and fp.last == (f.end - 1) // PIECE
    assert fp.head == (fp.first * PIECE, f.offset) and fp.tail == (f.end, (fp.last + 1) * PIECE)
    assert fp.boundary == (fp.first, fp.last) and fp.last - fp.first + 1 == 9


def test_every_file_verified_and_sha256_in_same_read(release):
    root, meta = release
    result = check_copy(meta, root)
    verdicts = decide(result)
    assert {v.status for v in verdicts.values()} == {"ok"}
    assert set(verdicts) == set(SIZES)
    for rel in SIZES:
        assert result.checks[rel].sha256 == hashlib.sha256((root / rel).read_bytes()).hexdigest()
    assert result.bytes_read == sum(SIZES.values())


def test_flipped_bit_inside_a_shard_fails_that_shard_only(release):
    root, meta = release
    flip(root / "ckpt-0/tensor00002_000", 70000)
    verdicts = decide(check_copy(meta, root))
    assert shards(verdicts) == {"ckpt-0/tensor00000_000": "ok", "ckpt-0/tensor00001_000": "ok",
                                "ckpt-0/tensor00002_000": "failed", "ckpt-0/tensor00003_000": "ok"}
    bad = verdicts["ckpt-0/tensor00002_000"]
    piece = (meta.files[meta.index_of("ckpt-0/tensor00002_000")].offset + 70000) // PIECE
    assert bad.pieces == (piece,) and f"piece {piece} (bytes " in bad.detail and "fails its SHA-1" in bad.detail


def test_flipped_last_byte_before_boundary_names_piece_and_both_files(release):
    root, meta = release
    flip(root / "ckpt-0/tensor00000_000", 70000)  # the last byte; its piece continues into tensor00001_000
    result = check_copy(meta, root)
    verdicts = decide(result)
    piece = 70000 // PIECE
    for rel in ("ckpt-0/tensor00000_000", "ckpt-0/tensor00001_000"):
        assert verdicts[rel].status == "failed" and verdicts[rel].pieces == (piece,)
        assert f"piece {piece}" in verdicts[rel].detail
        assert "ckpt-0/tensor00000_000" in verdicts[rel].detail and "ckpt-0/tensor00001_000" in verdicts[rel].detail
    assert verdicts["ckpt-0/tensor00002_000"].status == "ok"
    # a known-good sha256 for the neighbour settles it
    settled = decide(result, proven={"ckpt-0/tensor00001_000": True})
    assert settled["ckpt-0/tensor00000_000"].status == "failed"
    assert "proven by sha256" in settled["ckpt-0/tensor00000_000"].detail


def test_damage_inside_neighbour_blames_the_neighbour(release):
    root, meta = release
    flip(root / "ckpt-0/tensor00001_000", 0)  # first byte: in the piece shared with tensor00000_000 ...
    flip(root / "ckpt-0/tensor00001_000", 30000)  # ... and one in its interior
    verdicts = decide(check_copy(meta, root))
    assert verdicts["ckpt-0/tensor00001_000"].status == "failed"
    assert verdicts["ckpt-0/tensor00000_000"].status == "unverified"
    assert "which fails" in verdicts["ckpt-0/tensor00000_000"].detail


def test_missing_neighbour_gives_unverified_with_reason(release):
    root, meta = release
    (root / "tokenizer.model").unlink()  # not a checkpoint file, but it shares the last shard's last piece
    (root / "ckpt-0/tensor00001_000").unlink()  # a selective download
    verdicts = decide(check_copy(meta, root))
    assert verdicts["ckpt-0/tensor00003_000"].status == "unverified"
    assert "tokenizer.model is absent locally" in verdicts["ckpt-0/tensor00003_000"].detail
    for rel in ("ckpt-0/tensor00000_000", "ckpt-0/tensor00002_000"):
        assert verdicts[rel].status == "unverified"
        assert "ckpt-0/tensor00001_000 is absent locally" in verdicts[rel].detail
    assert verdicts["ckpt-0/tensor00001_000"].status == "failed"


def test_top_folder_renamed_and_only_some_files(release, tmp_path):
    root, meta = release
    moved = shutil.move(root, tmp_path / "my-copy")
    result = check_copy(meta, moved, paths=["ckpt-0/tensor00002_000"])
    assert list(result.checks) == ["ckpt-0/tensor00002_000"]
    assert decide(result)["ckpt-0/tensor00002_000"].status == "ok"
    assert result.bytes_read == SIZES["ckpt-0/tensor00002_000"]


def test_torrent_of_ckpt0_itself_maps_by_name(tmp_path):
    root = tmp_path / "rel"
    meta = read_torrent(make_release(root / "ckpt-0", {"tensor00000_000": 40000, "tensor00001_000": 30000}))
    copy = map_copy(meta, root, known=["ckpt-0/tensor00000_000", "ckpt-0/tensor00001_000"])
    assert copy.prefix == "ckpt-0/"
    verdicts = decide(check_copy(meta, root, known=["ckpt-0/tensor00000_000"]))
    assert {v.status for v in verdicts.values()} == {"ok"}


def test_per_file_api_with_neighbour_bytes(release):
    root, meta = release
    i = meta.index_of("ckpt-0/tensor00001_000")
    fp = file_pieces(meta, i)
    copy = map_copy(meta, root)
    before, after = read_range(meta, copy, *fp.head), read_range(meta, copy, *fp.tail)
    with PieceHasher(chunk_bytes=PIECE) as hasher:
        good = hasher.check_file(meta, i, root / fp.path, before=before, after=after)
        blind = hasher.check_file(meta, i, root / fp.path, after=after, sha256=False)
        wrong = hasher.check_file(meta, i, root / fp.path, before=bytes(len(before)), after=after)
    assert not good.failed and not good.unknown
    assert good.sha256 == hashlib.sha256((root / fp.path).read_bytes()).hexdigest()
    assert blind.unknown == {fp.first: "its neighbour's bytes were not given"} and blind.sha256 is None
    assert wrong.failed == [fp.first] and not wrong.interior_failed


def test_hybrid_torrent_with_pad_files(tmp_path):
    import libtorrent as lt

    root = tmp_path / "hy"
    rng = random.Random(1)
    sizes = {"ckpt-0/tensor00000_000": 40000, "ckpt-0/tensor00001_000": 30001}
    for rel, size in sizes.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rng.randbytes(size))
    entries = [lt.create_file_entry(f"hy/{rel}", size) for rel, size in sizes.items()]
    ct = lt.create_torrent(entries, PIECE)  # hybrid v1+v2: pad files align each file to a piece
    lt.set_piece_hashes(ct, str(tmp_path))
    (tmp_path / "hy.torrent").write_bytes(lt.bencode(ct.generate()))
    meta = read_torrent(tmp_path / "hy.torrent")
    assert any(f.pad for f in meta.files)
    assert {v.status for v in decide(check_copy(meta, root)).values()} == {"ok"}
    flip(root / "ckpt-0/tensor00000_000", 39999)  # with pads, no piece spans two files
    verdicts = decide(check_copy(meta, root))
    assert verdicts["ckpt-0/tensor00000_000"].status == "failed"
    assert verdicts["ckpt-0/tensor00001_000"].status == "ok"


def test_memory_stays_bounded_for_a_large_file(tmp_path):
    """A 160 MB file in 1 MiB pieces: peak RSS stays far below the file's size (no whole file or piece list copied)."""
    from .helpers import run_python

    root = tmp_path / "big"
    (root / "ckpt-0").mkdir(parents=True)
    block = random.Random(5).randbytes(1 << 20)
    with open(root / "ckpt-0" / "tensor00000_000", "wb") as fh:
        for _ in range(160):
            fh.write(block)
    (root / "ckpt-0" / "tensor00001_000").write_bytes(block[:12345])
    import grokweights

    torrent = grokweights.create_torrent(root, tmp_path / "big.torrent", piece_size=1 << 20)
    # VmHWM is this process's own peak: ru_maxrss would also count the parent's heap copied at fork
    code = f"""
from grokweights.checkpoint.pieces import check_copy, decide
from grokweights.checkpoint.torrentfile import read_torrent
verdicts = decide(check_copy(read_torrent({str(torrent)!r}), {str(root)!r}, sha256=True))
assert {{v.status for v in verdicts.values()}} == {{"ok"}}, verdicts
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) // 1024)
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 100, f"peak RSS {result.stdout.strip()} MiB for a 160 MiB file"
