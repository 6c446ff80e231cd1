"""``smoke``: synth -> reshard -> load -> forward on 8 simulated devices, checks, fingerprints, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.checkpoint.shards import QuantizedWeight8bit, read_shard, write_shard
from grokweights.checkpoint.synth import synthesize
from grokweights.cli import main
from grokweights.errors import MeshError, UsageError
from grokweights.runtime.fingerprint import Fingerprint
from grokweights.runtime.smoke import simulate_cpu_devices, smoke
from grokweights.store.reshard import reshard

from .test_tokenizer import train_tokenizer

TINY = preset("tiny")
MESH = "data=2,model=4"


def _store(root, name: str, alter=None):
    """A synthetic tiny checkpoint (seed 0), optionally with one shard rewritten, resharded for MESH."""
    src = root / f"{name}-src"
    synthesize(src, TINY, seed=0)
    if alter is not None:
        key, change = alter
        spec = next(s for s in layout(TINY) if s.key == key)
        path = src / "ckpt-0" / spec.file
        value = read_shard(path)
        changed = change(value)
        del value
        write_shard(path, changed)
    dst = root / f"{name}-store"
    reshard(src, dst, MESH, config=TINY, verify=False)
    return dst


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    query = "transformer/decoder_layer_0/multi_head_attention/query/w"
    return {
        "good": _store(root, "good"),
        # a different, equally plausible query projection: same scales, rows in another order
        "altered": _store(root, "altered", (query, lambda q: QuantizedWeight8bit(np.array(q.weight[::-1]),
                                                                                  np.array(q.scales)))),
        "nan": _store(root, "nan", ("language_model/rms_norm/scale", lambda s: np.full(s.shape, np.nan, s.dtype))),
        "root": root,
    }


def _cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_end_to_end_synth_reshard_smoke(tmp_path):
    assert _cli("synth", "--preset", "tiny", "--out", tmp_path / "src").exit_code == 0
    result = _cli("reshard", tmp_path / "src", tmp_path / "store", "--mesh", MESH)
    assert result.exit_code == 0, result.output
    result = _cli("smoke", tmp_path / "store", "--json", "--check-mesh", "single", "--tokens", "5,6,7,8;9,10,11,0",
                  "--batch", "3")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True and report["mesh"] == MESH and len(report["devices"]) == 8
    assert {c["name"]: c["ok"] for c in report["checks"]} == {
        "shape": True, "finite": True, "deterministic": True, "mesh": True}
    assert report["tokens"] == [[5, 6, 7, 8], [9, 10, 11, 0], [5, 6, 7, 8]]
    assert report["layers"] == [0, 1] and report["dtype"] == "bfloat16"
    assert report["load_bytes"] == report["param_bytes"] > 1_000_000
    assert report["compile_seconds"] > 0 and report["tokens_per_second"] > 0
    assert [len(row) for row in report["top"]] == [5, 5, 5]
    assert report["top"][0] == report["top"][2]  # the same sequence twice gives the same answer
    assert "against mesh data=1,model=1" in report["checks"][3]["detail"]


def test_fingerprint_holds_across_meshes_and_catches_an_altered_weight(stores, tmp_path):
    fingerprint = tmp_path / "expect.json"
    report = smoke(stores["good"], save_expect=fingerprint)
    assert report.ok and fingerprint.is_file()
    saved = Fingerprint.load(fingerprint)
    assert saved.mesh == MESH and saved.dtype == "bfloat16" and len(saved.top[0]) == 8

    result = _cli("smoke", stores["good"], "--mesh", "data=8,model=1", "--expect", fingerprint, "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert checks["expect"]["ok"] and "matches the fingerprint" in checks["expect"]["detail"]

    result = _cli("smoke", stores["altered"], "--expect", fingerprint, "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["shape"]["ok"] and checks["finite"]["ok"] and checks["deterministic"]["ok"]
    assert not checks["expect"]["ok"] and "differs from the fingerprint" in checks["expect"]["detail"]

    result = _cli("smoke", stores["good"], "--expect", fingerprint, "--tokens", "1,2,3")
    assert result.exit_code == 1 and "the fingerprint is for tokens" in result.output
    assert "smoke: FAILED (expect)" in result.output


@pytest.mark.slow
def test_float32_agrees_across_meshes_tightly(stores, tmp_path):
    fingerprint = tmp_path / "f32.json"
    report = smoke(stores["good"], dtype="float32", check_mesh="data=1,model=2", save_expect=fingerprint)
    assert report.ok and report.fingerprint.tolerance < 1e-2
    mesh = next(c for c in report.checks if c.name == "mesh")
    assert float(mesh.detail.split()[2]) < 1e-4
    again = smoke(stores["good"], dtype="float32", mesh="data=8", expect=fingerprint)
    assert again.ok and again.mesh == "data=8,model=1"
    assert not smoke(stores["good"], expect=fingerprint).ok  # a bfloat16 run is not the float32 one


def test_non_finite_logits_fail(stores):
    result = _cli("smoke", stores["nan"], "--json")
    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert not checks["finite"]["ok"] and "NaN or infinite" in checks["finite"]["detail"]


def test_prompt_with_tokenizer_and_layer_subset(stores, tmp_path):
    model = tmp_path / "tok.model"
    train_tokenizer(model)
    result = _cli("smoke", stores["good"], "--prompt", "the router keeps the top two experts", "--tokenizer", model,
                  "--layers", "1", "--mesh", "single")
    assert result.exit_code == 0, result.output
    assert "layers 1," in result.output and "mesh    data=1,model=1 on cpu:0" in result.output
    assert "smoke: ok" in result.output
    report = smoke(stores["good"], prompt="the router keeps the top two experts", tokenizer=model, layers=[1],
                   mesh="single")
    assert all(t.text is not None for t in report.top[0])
    assert report.layers == (1,) and min(report.tokens[0]) >= 4


def test_dry_run_sizes_without_loading(stores):
    result = _cli("smoke", stores["good"], "--dry-run", "--json", "--batch", "4")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    index = json.loads((stores["good"] / "grokweights.json").read_text())
    assert plan["mesh"] == MESH and plan["weight_bytes"] == index["plan"]["bytes_per_device"][0]
    assert plan["batch"] == 4 and plan["length"] == 16 and plan["fits"] is True


def test_bad_input_is_named(stores):
    with pytest.raises(MeshError, match="needs 16 devices but 8 are available"):
        smoke(stores["good"], mesh="data=4,model=4")
    with pytest.raises(UsageError, match="needs a tokenizer"):
        smoke(stores["good"], prompt="hello")
    result = _cli("smoke", stores["root"] / "absent")
    assert result.exit_code != 0 and "absent" in result.output
    result = _cli("smoke", stores["good"], "--tokens", "1,2,600")
    assert result.exit_code == 2 and "0..511" in result.output
    result = _cli("smoke", stores["good"], "--expect", stores["root"] / "none.json")
    assert result.exit_code == 2 and "none.json: fingerprint file not found" in result.output


def test_checkpoint_folder_directly(stores):
    report = smoke(stores["root"] / "good-src", mesh="data=1,model=8", layers="0")
    assert report.ok and report.source == "ckpt-0" and report.layers == (0,)


def test_host_devices_simulates_cpu_devices(stores):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    code = "from grokweights.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, "smoke", str(stores["good"]), "--host-devices", "8",
                          "--dry-run", "--json"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["devices"] == 8
    with pytest.raises(UsageError, match="jax is already initialised"):
        simulate_cpu_devices(8)
