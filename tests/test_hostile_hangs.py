"""Hostile input, campaign 2: inputs that used to hang or grow without bound (issue 17, defects 12-18).

Each case runs the CLI in a subprocess under a memory limit and a timeout (tests/hostile.py) and must end with
one line naming the file and the fix, within seconds, whatever the input is: a FIFO that never delivers, a
device that never ends, a sparse file of gigabytes, a torrent whose pieces would be a terabyte, a hub whose
listing never ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from grokweights.checkpoint.bencode import encode
from tests.hostile import assert_clean_failure, run_cli

pytestmark = pytest.mark.timeout(180)

GIB = 1 << 30


def _make_torrent(checkpoint, out, **info_fields) -> str:
    """A .torrent of ``checkpoint`` (grokweights' own), with ``info_fields`` replacing its info dict's."""
    from grokweights.checkpoint.bencode import decode_torrent

    made = out.with_suffix(".made.torrent")
    done = subprocess.run([sys.executable, "-m", "grokweights", "torrent", "create", str(checkpoint), "-o", str(made),
                           "-q"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    top, _ = decode_torrent(made.read_bytes(), where=str(made))
    info = {**top[b"info"], **{k.replace("_", " ").encode(): v for k, v in info_fields.items()}}
    out.write_bytes(encode({b"info": info}))
    import hashlib

    return hashlib.sha1(encode(info)).hexdigest()


def _odd_file(tmp_path, kind: str):
    """A path that is a FIFO, ``/dev/zero``, or a 2 GiB sparse file."""
    if kind == "fifo":
        path = tmp_path / "odd.torrent"
        os.mkfifo(path)
        return path
    if kind == "dev-zero":
        return "/dev/zero"
    path = tmp_path / "sparse.torrent"
    with open(path, "wb") as f:
        f.truncate(2 * GIB)
    return path


# ----------------------------------------------------------------------------- 12: the .torrent read unchecked


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "sparse-2g"])
def test_verify_torrent_reads_only_a_bounded_regular_file(tiny_checkpoint, tmp_path, kind):
    odd = _odd_file(tmp_path, kind)
    result = run_cli(["verify", tiny_checkpoint, "--torrent", odd], timeout=30, memory=GIB)
    why = "too large" if kind == "sparse-2g" else "not a regular file"
    assert_clean_failure(result, names=[str(odd), why], fix="give a .torrent file" if kind != "sparse-2g" else ())


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "sparse-2g"])
def test_pin_from_torrent_reads_only_a_bounded_regular_file(tiny_checkpoint, tmp_path, kind):
    odd = _odd_file(tmp_path, kind)
    manifest = tmp_path / "m.json"
    shutil.copy(tiny_checkpoint / "grokweights-manifest.json", manifest)
    before = manifest.read_bytes()
    result = run_cli(["manifest", "pin", tiny_checkpoint, "--manifest", manifest, "--from-torrent", odd], timeout=30,
                     memory=GIB)
    assert_clean_failure(result, names=[str(odd)])
    assert manifest.read_bytes() == before


# ----------------------------------------------------------------------------- 15: a completion record that is a FIFO


def test_a_completion_record_that_is_a_fifo_does_not_hang_verify(tiny_checkpoint):
    state = tiny_checkpoint / ".grokweights"
    state.mkdir()
    record = state / f"{'ab' * 20}.complete"
    os.mkfifo(record)
    result = run_cli(["verify", tiny_checkpoint], timeout=60)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert str(record) in result.stdout + result.stderr and "FIFO" in result.stdout + result.stderr


# ----------------------------------------------------------------------------- 16: a piece of a terabyte


@pytest.mark.parametrize("command", ["verify", "pin"])
def test_a_torrent_with_terabyte_pieces_is_refused_in_one_line(tiny_checkpoint, tmp_path, command):
    torrent = tmp_path / "huge.torrent"
    infohash = _make_torrent(tiny_checkpoint, torrent, piece_length=1 << 40, pieces=b"\x11" * 20)
    manifest = tmp_path / "m.json"
    data = json.loads((tiny_checkpoint / "grokweights-manifest.json").read_text())
    data["sources"]["infohash_v1"] = infohash  # the torrent is "the release's": only its piece length is wrong
    manifest.write_text(json.dumps(data))
    args = (["verify", tiny_checkpoint, "--manifest", manifest, "--torrent", torrent] if command == "verify" else
            ["manifest", "pin", tiny_checkpoint, "--manifest", manifest, "--from-torrent", torrent])
    result = run_cli(args, timeout=60, memory=2 * GIB)
    assert_clean_failure(result, names=[str(torrent), "piece length", str(1 << 40)])


# ----------------------------------------------------------------------------- 18: a hub listing that never ends


def test_pin_from_a_hub_whose_listing_never_ends(tiny_checkpoint, tmp_path):
    pytest.importorskip("huggingface_hub")
    from tests.fakehub import FakeHub, repo_from_folder

    manifest = tmp_path / "m.json"
    shutil.copy(tiny_checkpoint / "grokweights-manifest.json", manifest)
    before = manifest.read_bytes()
    with FakeHub({"xai-org/grok-1": repo_from_folder(tiny_checkpoint)}) as hub:
        hub.endless = True
        result = run_cli(["manifest", "pin", "--manifest", manifest, "--from-hub", "xai-org/grok-1"],
                         env={"HF_ENDPOINT": hub.url}, timeout=150)
    assert_clean_failure(result, names=["xai-org/grok-1", "entries"], fix="give the repository of the checkpoint")
    assert manifest.read_bytes() == before
