"""Hostile input to ``export``: racing exports, patched dtypes, unverified sources, destinations that are not
ours, full disks, kills between renames and files that are not tokenizers.

Each case runs the CLI in a subprocess under a memory limit and a timeout: a refusal exits 1 or 2 with one
error line naming the file and the fix, no traceback, and leaves nothing behind outside the destination (no
``.DST.partial`` either).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys

import pytest

from grokweights.checkpoint.completion import CompletionRecord, write_record
from tests.hostile import REPO, CliResult, assert_clean_failure, assert_tree_unchanged, run_cli, tree_state

SHARD = "tensor00002_000"  # transformer/decoder_layer_0/moe/linear/w: int8 weight + bfloat16 scales
SIZE = "200K"


def _export(src, dst, *args, fmt="sglang", **kwargs):
    return run_cli(["export", src, dst, "--format", fmt, "--dtype", "f32", "-q", *args], timeout=120, **kwargs)


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def _assert_folder_export(folder) -> None:
    """A complete safetensors export: its index names exactly the files there (and every one exists)."""
    from safetensors.numpy import load_file

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert files == {p.name for p in folder.glob("*.safetensors")}, sorted(p.name for p in folder.iterdir())
    names = set()
    for name in files:
        names |= set(load_file(folder / name))
    assert names == set(index["weight_map"])


# ------------------------------------------------------------------------------------ two exports, one DST


def test_a_second_export_is_refused_while_one_holds_the_destination(tiny_checkpoint, tmp_path):
    dst = tmp_path / "out"
    lock = tmp_path / ".out.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        result = _export(tiny_checkpoint, dst)
    finally:
        os.close(fd)
    assert_clean_failure(result, names=[str(lock), f"pid {os.getpid()}"], fix="another export")
    assert not dst.exists() and not _leftovers(tmp_path)


def test_racing_exports_never_mix(tiny_checkpoint, tmp_path):
    dst = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "GROKWEIGHTS_DISABLE_PROGRESS": "1"}
    env.pop("GROKWEIGHTS_DEBUG", None)
    runs = [subprocess.Popen([sys.executable, "-m", "grokweights", "export", str(tiny_checkpoint), str(dst),
                              "--format", "sglang", "--dtype", "f32", "-q", *extra], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for extra in (["--shard-size", SIZE], [])]
    outputs = [p.communicate(timeout=120) for p in runs]
    results = [CliResult(p.returncode, *out) for p, out in zip(runs, outputs, strict=True)]
    assert sum(code == 0 for code, _, _ in results) >= 1, results
    for result in results:
        if result[0] != 0:
            assert_clean_failure(result, names=str(dst))
    _assert_folder_export(dst)
    assert not _leftovers(tmp_path)


# ---------------------------------------------------------------------------------- shards checked exactly


def test_a_patched_weight_dtype_is_refused(tiny_checkpoint, tmp_path):
    shard = tiny_checkpoint / "ckpt-0" / SHARD
    data = bytearray(shard.read_bytes())
    at = data.index(b"\x8c\x02i1")
    data[at + 2:at + 4] = b"u1"
    shard.write_bytes(bytes(data))
    result = _export(tiny_checkpoint, tmp_path / "out", "--no-verify")
    assert_clean_failure(result, names=[str(shard), "expected int8", "found uint8"])
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_scales_of_zero_blocks_are_a_bad_shard(tiny_checkpoint, tmp_path):
    import numpy as np

    from grokweights.checkpoint.shards import QuantizedWeight8bit, read_shard, write_shard

    shard = tiny_checkpoint / "ckpt-0" / SHARD
    value = read_shard(shard)
    weight = np.array(value.weight)
    write_shard(shard, QuantizedWeight8bit(weight, np.zeros((8, 0, 344), dtype=np.asarray(value.scales).dtype)))
    result = _export(tiny_checkpoint, tmp_path / "out", "--no-verify")
    assert_clean_failure(result, names=[str(shard), "scales shape"])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- the source is verified


def _flip(path, offset=-100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _swap(a, b) -> None:
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


@pytest.mark.parametrize("damage", ["flipped", "swapped", "symlinked"])
def test_a_damaged_source_is_refused(tiny_checkpoint, tmp_path, damage):
    ckpt = tiny_checkpoint / "ckpt-0"
    # two norms of one shape: the headers agree with the layout, only the data differs
    a, b = ckpt / "tensor00009_000", ckpt / "tensor00010_000"
    if damage == "flipped":
        _flip(a)
    elif damage == "swapped":
        _swap(a, b)
    else:
        a.unlink()
        a.symlink_to(b.name)
    result = _export(tiny_checkpoint, tmp_path / "out")
    assert_clean_failure(result, names=[str(tiny_checkpoint / "ckpt-0"), "tensor00009_000"], fix="--no-verify")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)
    if damage == "flipped":  # the escape hatch, as reshard's
        assert _export(tiny_checkpoint, tmp_path / "out", "--no-verify").returncode == 0


def test_a_shard_the_completion_record_calls_incomplete_is_refused(tiny_checkpoint, tmp_path):
    manifest = tiny_checkpoint / "grokweights-manifest.json"
    data = json.loads(manifest.read_text())
    for shard in data["shards"]:  # as the shipped grok-1 manifest: sizes, no sha256
        shard["sha256"] = None
    manifest.write_text(json.dumps(data))
    size = (tiny_checkpoint / "ckpt-0" / SHARD).stat().st_size
    write_record(tiny_checkpoint, CompletionRecord("ab" * 20, "tiny", {f"ckpt-0/{SHARD}": (size, False)}))
    result = _export(tiny_checkpoint, tmp_path / "out")
    assert_clean_failure(result, names=[SHARD, "incomplete"], fix="--no-verify")
    assert not (tmp_path / "out").exists()
    # complete: it exports, saying that nothing could be proven
    write_record(tiny_checkpoint, CompletionRecord("ab" * 20, "tiny", {f"ckpt-0/{SHARD}": (size, True)}))
    done = _export(tiny_checkpoint, tmp_path / "out")
    assert done.returncode == 0, done
    assert "unverified" in done.stdout + done.stderr and "no sha256" in done.stdout + done.stderr


def test_no_manifest_needs_no_verify(tiny_checkpoint, tmp_path):
    (tiny_checkpoint / "grokweights-manifest.json").unlink()
    result = _export(tiny_checkpoint, tmp_path / "out", "--preset", "tiny")
    assert_clean_failure(result, names=str(tiny_checkpoint), fix=["--manifest", "--no-verify"])
    assert _export(tiny_checkpoint, tmp_path / "out", "--preset", "tiny", "--no-verify").returncode == 0


# ------------------------------------------------------------------------ nothing outside what export owns


@pytest.mark.parametrize("where", ["src", "ckpt", "in-ckpt", "shard", "empty", "cwd", "not-an-export"])
def test_destinations_that_are_not_ours(tiny_checkpoint, tmp_path, where):
    work = tmp_path / "work"
    (work / "notes").mkdir(parents=True)
    (work / "notes" / "mine.txt").write_text("mine")
    (work / "keep.txt").write_text("keep")
    ckpt = tiny_checkpoint / "ckpt-0"
    dst, fmt = {"src": (tiny_checkpoint, "sglang"), "ckpt": (ckpt, "sglang"), "in-ckpt": (ckpt / "x.gguf", "gguf"),
                "shard": (ckpt / "tensor00001_000", "gguf"), "empty": ("", "sglang"), "cwd": (".", "sglang"),
                "not-an-export": (work / "notes", "sglang")}[where]
    before_src, before_work = tree_state(tiny_checkpoint), tree_state(work)
    result = _export(tiny_checkpoint, dst, "--force", fmt=fmt, cwd=work)
    assert_clean_failure(result, fix="destination")
    assert_tree_unchanged(tiny_checkpoint, before_src)
    assert_tree_unchanged(work, before_work)


def test_force_replaces_only_this_exports_split_files(tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    others = [out / f"grok-q8-0000{i}-of-00002.gguf" for i in (1, 2)] + [out / "grok-notes.gguf"]
    for path in others:
        path.write_text("another model")
    first = _export(tiny_checkpoint, out / "grok.gguf", "--shard-size", SIZE, fmt="gguf")
    assert first.returncode == 0, first
    ours = sorted(out.glob("grok-0000*-of-*.gguf"))
    assert len(ours) > 1
    again = _export(tiny_checkpoint, out / "grok.gguf", "--force", fmt="gguf")
    assert again.returncode == 0, again
    assert all(p.read_text() == "another model" for p in others)
    assert (out / "grok.gguf").is_file() and not any(p.exists() for p in ours)


# ----------------------------------------------------------------------------- one line, not a traceback


@pytest.mark.parametrize("size", ["inf", "1e400", "nan", "-5"])
def test_shard_size_not_a_size(tiny_checkpoint, tmp_path, size):
    result = _export(tiny_checkpoint, tmp_path / "out", "--shard-size", size)
    assert_clean_failure(result, names=size)
    assert not (tmp_path / "out").exists()


def test_a_destination_whose_parent_is_a_file(tiny_checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    result = _export(tiny_checkpoint, tmp_path / "file" / "out.gguf", fmt="gguf")
    assert_clean_failure(result, names=str(tmp_path / "file"), fix="destination")


def _room_limited(folder, how: str) -> list[str]:
    if how == "enospc":  # a real full disk: a 1 MiB tmpfs in a private mount namespace
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("a private tmpfs needs root and unshare")
        script = 'mount -t tmpfs -o size=1M tmpfs "$0" || exit 99; "$@"; rc=$?; echo "LEFT:$(ls -A "$0")"; exit $rc'
        return ["unshare", "-m", "sh", "-c", script, str(folder)]  # lists what the export left on that disk
    return ["prlimit", "--fsize=300000", "--"]  # EFBIG: no file of this process may grow past 300 kB


@pytest.mark.parametrize("how", ["enospc", "efbig"])
@pytest.mark.parametrize("fmt", ["gguf", "sglang"])
def test_a_full_disk_gives_one_line_and_removes_the_partial_output(tiny_checkpoint, tmp_path, how, fmt):
    folder = tmp_path / "disk"
    folder.mkdir()
    wrap = _room_limited(folder, how)
    if shutil.which(wrap[0]) is None:
        pytest.skip(f"{wrap[0]} is not installed")
    dst = folder / ("out.gguf" if fmt == "gguf" else "out")
    # the preflight believes there is room (someone else fills the disk during the export)
    result = run_cli(["export", tiny_checkpoint, dst, "--format", fmt, "--dtype", "f32", "-q"], timeout=120,
                     env={"GROKWEIGHTS_FREE_SPACE_BYTES": 10**12}, wrap=wrap)
    assert_clean_failure(result, names=str(folder), fix="space")
    if how == "efbig":
        assert not dst.exists() and not _leftovers(folder)
    else:
        assert "LEFT:\n" in result.stdout, result.stdout[-2000:]  # nothing on the full disk, no .partial


def test_a_bad_tokenizer_leaves_nothing_behind(tiny_checkpoint, tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x0a\x05hello not a model" * 10)
    out = tmp_path / "out"
    out.mkdir()
    for fmt, dst in (("gguf", out / "x.gguf"), ("sglang", out / "sg"), ("hf", out / "hf")):
        result = _export(tiny_checkpoint, dst, "--tokenizer", bad, fmt=fmt)
        assert_clean_failure(result, names=str(bad), fix="SentencePiece")
        assert not list(out.iterdir()), fmt


def test_a_huge_tokenizer_is_refused_unread(tiny_checkpoint, tmp_path):
    sparse = tmp_path / "tokenizer.model"
    with open(sparse, "wb") as f:
        f.truncate(8 * 2**30)  # 8 GiB, sparse: nothing on disk
    result = run_cli(["export", tiny_checkpoint, tmp_path / "x.gguf", "--format", "gguf", "--tokenizer", sparse,
                      "-q"], timeout=60, memory=1 << 30)
    assert_clean_failure(result, names=str(sparse), fix="SentencePiece")
    assert not (tmp_path / "x.gguf").exists()


def test_a_tokenizer_that_is_not_a_regular_file(tiny_checkpoint, tmp_path):
    fifo = tmp_path / "tokenizer.model"
    os.mkfifo(fifo)
    result = run_cli(["export", tiny_checkpoint, tmp_path / "sg", "--format", "sglang", "--tokenizer", fifo, "-q"],
                     timeout=60)
    assert_clean_failure(result, names=str(fifo), fix="FIFO")


# ------------------------------------------------------------------------------- a kill between renames


def test_a_kill_between_the_renames_of_a_split_gguf_starts_over(tiny_checkpoint, tmp_path):
    dst = tmp_path / "grok.gguf"
    code = ("import os, signal, sys\nfrom grokweights.cli import main\nreal, seen = os.replace, []\n"
            "def replace(a, b):\n    real(a, b)\n    seen.append(b)\n"
            "    if str(b).endswith('.gguf') and len([s for s in seen if str(s).endswith('.gguf')]) == 1:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "os.replace = replace\nsys.argv = ['grokweights', *sys.argv[1:]]\nmain()\n")
    args = ["export", str(tiny_checkpoint), str(dst), "--format", "gguf", "--dtype", "f32", "--shard-size", SIZE,
            "-q"]
    killed = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert list(tmp_path.glob("grok-*-of-*.gguf")), "the kill came after the first rename"
    rerun = _export(tiny_checkpoint, dst, "--shard-size", SIZE, fmt="gguf")
    assert rerun.returncode == 0, rerun
    parts = sorted(tmp_path.glob("grok-*-of-*.gguf"))
    count = int(parts[0].name.split("-of-")[1].split(".")[0])
    assert len(parts) == count and not _leftovers(tmp_path)
    from gguf import GGUFReader

    assert GGUFReader(parts[0]).fields["split.count"].parts[-1][0] == count


def test_a_store_source_is_never_written_into(tiny_checkpoint, tmp_path):
    from grokweights.store import reshard

    store = tmp_path / "store"
    reshard(tiny_checkpoint, store, "data=1,model=2")
    before = tree_state(store)
    for dst in (store, store / "sub", store / "x.gguf"):
        fmt = "gguf" if dst.suffix == ".gguf" else "sglang"
        assert_clean_failure(_export(store, dst, "--force", fmt=fmt), names=str(store), fix="destination")
    result = _export(store, tmp_path / "out", "--manifest", tiny_checkpoint / "grokweights-manifest.json")
    assert_clean_failure(result, names=str(store), fix="verify STORE")
    assert_tree_unchanged(store, before)


def test_without_sha256_the_torrent_beside_the_data_proves_the_pieces(tiny_checkpoint, tmp_path):
    """A manifest without sha256 (as the shipped grok-1 one) and the release torrent kept beside the data: a
    flipped byte fails its piece, and the export is refused."""
    from grokweights.torrent import create_torrent

    m0 = tmp_path / "m0.json"
    (tiny_checkpoint / "grokweights-manifest.json").rename(m0)
    torrent = create_torrent(tiny_checkpoint, piece_size=16 * 1024)  # DIR/<infohash>.torrent, as fetch keeps it
    data = json.loads(m0.read_text())
    data["sources"]["infohash_v1"] = torrent.stem
    for shard in data["shards"]:
        shard["sha256"] = None
    m0.write_text(json.dumps(data))
    proven = _export(tiny_checkpoint, tmp_path / "ok", "--manifest", m0)
    assert proven.returncode == 0 and "unverified" not in proven.stderr, proven
    _flip(tiny_checkpoint / "ckpt-0" / "tensor00009_000")
    result = _export(tiny_checkpoint, tmp_path / "out", "--manifest", m0)
    assert_clean_failure(result, names=["tensor00009_000", "pieces"], fix="--no-verify")


def test_force_replaces_an_export_folder(tiny_checkpoint, tmp_path):
    dst = tmp_path / "sg"
    assert _export(tiny_checkpoint, dst, "--shard-size", SIZE).returncode == 0
    many = sorted(p.name for p in dst.glob("*.safetensors"))
    assert_clean_failure(_export(tiny_checkpoint, dst), names=str(dst), fix="--force")
    again = _export(tiny_checkpoint, dst, "--force")
    assert again.returncode == 0, again
    _assert_folder_export(dst)
    assert len(many) > 1 and len(list(dst.glob("*.safetensors"))) == 1  # the earlier files went with it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
