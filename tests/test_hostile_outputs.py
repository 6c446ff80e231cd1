"""Hostile outputs and tolerances: files a command would overwrite, folders it would write into, tolerances that
compare nothing.

Each case runs the CLI in a subprocess under a timeout and must fail cleanly (exit 1 or 2, one error line naming
the file or option and the fix, no traceback) and leave every file as it was.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from grokweights.errors import UsageError
from grokweights.runtime.fingerprint import Fingerprint
from tests.hostile import assert_clean_failure, assert_tree_unchanged, run_cli, tree_state

# ----------------------------------------------------------------------------------- smoke --tolerance


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "NaN"])
def test_smoke_tolerance_must_be_a_finite_non_negative_number(tiny_checkpoint, tmp_path, value):
    result = run_cli(["smoke", tiny_checkpoint, "--layers", "0", "--check-mesh", "single", "--tolerance", value],
                     cwd=tmp_path, timeout=120, memory=None)
    assert_clean_failure(result, names="--tolerance", codes=(2,))


def _logits(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 64)).astype(np.float32)


def test_a_nan_tolerance_never_matches():
    tokens = np.array([[1, 2, 3]])
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(UsageError, match="tolerance"):
            Fingerprint.of(_logits(0), tokens, layers=(0,), dtype="float32", tolerance=bad)
    good = Fingerprint.of(_logits(0), tokens, layers=(0,), dtype="float32", tolerance=0.01)
    assert good.check(_logits(0), tokens, layers=(0,), dtype="float32") == []
    assert good.check(_logits(1), tokens, layers=(0,), dtype="float32")  # another run's logits fail
    for field, value in (("tolerance", float("nan")), ("tolerance", float("inf")), ("tolerance", -0.5),
                         ("mean", [float("nan")]), ("std", [float("inf")])):
        data = {**good.to_dict(), field: value}
        with pytest.raises(UsageError, match=field):
            Fingerprint.from_dict(data, source="fp.json")
    top = good.to_dict()
    top["top"][0][0][1] = float("nan")
    with pytest.raises(UsageError, match="top"):
        Fingerprint.from_dict(top, source="fp.json")


def test_smoke_refuses_a_fingerprint_with_a_nan_tolerance(tiny_checkpoint, tmp_path):
    fingerprint = tmp_path / "fp.json"
    good = Fingerprint.of(_logits(0), np.array([[1, 2, 3]]), layers=(0,), dtype="bfloat16", tolerance=0.01)
    fingerprint.write_text(json.dumps({**good.to_dict(), "tolerance": float("nan")}))  # NaN, as json writes it
    result = run_cli(["smoke", tiny_checkpoint, "--layers", "0", "--expect", fingerprint], cwd=tmp_path, timeout=120,
                     memory=None)
    assert_clean_failure(result, names=[str(fingerprint), "tolerance"])


# ------------------------------------------------------------------------------------ outputs that exist


@pytest.mark.parametrize("target", ["shard", "manifest", "file"])
@pytest.mark.parametrize("command", ["smoke", "torrent"])
def test_outputs_never_overwrite_without_force(tiny_checkpoint, tmp_path, command, target):
    mine = tmp_path / "mine.json"
    mine.write_text("mine")
    path = {"shard": tiny_checkpoint / "ckpt-0" / "tensor00002_000",
            "manifest": tiny_checkpoint / "grokweights-manifest.json", "file": mine}[target]
    option = "--save-expect" if command == "smoke" else "-o"
    args = (["smoke", tiny_checkpoint, "--layers", "0", "--save-expect", path] if command == "smoke"
            else ["torrent", "create", tiny_checkpoint, "-o", path, "-q"])
    before, mine_before = tree_state(tiny_checkpoint), mine.read_text()
    result = run_cli(args, cwd=tmp_path, timeout=120, memory=None)
    assert_clean_failure(result, names=[str(path), option])
    assert_tree_unchanged(tiny_checkpoint, before)
    assert mine.read_text() == mine_before
    if target == "shard":  # never, even with --force
        result = run_cli([*args, "--force"], cwd=tmp_path, timeout=120, memory=None)
        assert_clean_failure(result, names=[str(path), option])
        assert_tree_unchanged(tiny_checkpoint, before)


def test_force_never_replaces_what_is_not_a_regular_file(tiny_checkpoint, tmp_path):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    result = run_cli(["manifest", "create", tiny_checkpoint, "-o", fifo, "--force"], timeout=60)
    assert_clean_failure(result, names=str(fifo), fix="FIFO")
    assert fifo.is_fifo()


# ------------------------------------------------------------------------------ synth writes where it owns


@pytest.mark.parametrize("where", ["ckpt", "inside-ckpt", "empty", "shards"])
def test_synth_never_writes_inside_a_checkpoint_or_the_current_folder(tiny_checkpoint, tmp_path, where):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tensor00000_000").write_bytes((tiny_checkpoint / "ckpt-0" / "tensor00000_000").read_bytes())
    out = {"ckpt": tiny_checkpoint / "ckpt-0", "inside-ckpt": tiny_checkpoint / "ckpt-0" / "sub", "empty": "",
           "shards": bare}[where]
    before, before_work, before_bare = tree_state(tiny_checkpoint), tree_state(work), tree_state(bare)
    result = run_cli(["synth", "--preset", "tiny", "--layers", "1", "--out", out, "-q"], cwd=work, timeout=60)
    assert_clean_failure(result, names="--out")
    assert_tree_unchanged(tiny_checkpoint, before)
    assert_tree_unchanged(work, before_work)
    assert_tree_unchanged(bare, before_bare)
