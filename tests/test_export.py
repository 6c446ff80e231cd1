"""grokweights export: safetensors by the names (SGLang, hpcai-tech/vLLM), plan, refusals, atomic output."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from grokweights.engines import export, plan_tensors
from grokweights.errors import InsufficientSpaceError, UsageError

from .export_reference import HF_ROLES, SGLANG_ROLES, TINY4, by_names, reference_forward, rel_l2

TOKENS = np.array([[5, 17, 301, 42, 7, 99, 3, 250, 11, 64, 400, 2],
                   [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 511, 12]], dtype=np.int32)


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    """A synthetic checkpoint of the tiny structure with 4 scale blocks (8 experts top-2, GQA)."""
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.constants import LOCAL_MANIFEST_NAME

    root = tmp_path_factory.mktemp("tiny4")
    synthesize(root, TINY4, seed=3)
    create_manifest(root, name="tiny4", config=TINY4).save(root / LOCAL_MANIFEST_NAME)  # export verifies against it
    return root


@pytest.fixture(scope="module")
def jax_logits(tiny4):
    """``grokweights.forward`` in float32 on the checkpoint's weights."""
    import jax.numpy as jnp

    import grokweights

    params = grokweights.load(tiny4, config=TINY4)
    return np.asarray(grokweights.forward(params, TOKENS, TINY4, dtype=jnp.float32))


@pytest.fixture
def out_dir(tmp_path):
    """An empty folder for outputs (tmp_path itself holds the test's HOME)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _load_folder(folder):
    from safetensors.numpy import load_file

    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors = {}
    for name in sorted(set(index["weight_map"].values())):
        part = load_file(folder / name)
        assert not set(part) & set(tensors), "a tensor is stored twice"
        tensors.update(part)
    assert set(tensors) == set(index["weight_map"]), "the index lists exactly the stored tensors"
    return tensors, index


@pytest.mark.parametrize(("fmt", "roles"), [("sglang", SGLANG_ROLES), ("hf", HF_ROLES)])
def test_safetensors_reference_forward_matches_grokweights_forward(tiny4, jax_logits, tmp_path, fmt, roles):
    """Read back by the target's names, in (out, in) orientation: same logits as grokweights.forward."""
    out = tmp_path / fmt
    report = export(tiny4, out, format=fmt, dtype="f32", config=TINY4, shard_size="1M")
    tensors, index = _load_folder(out)
    assert len(set(index["weight_map"].values())) > 1  # --shard-size split the output
    assert index["metadata"]["total_size"] == report.bytes
    logits = reference_forward(TOKENS, TINY4, by_names(tensors, roles), TINY4.num_layers)
    err = rel_l2(logits, jax_logits)
    print(f"{fmt}: rel L2 vs grokweights.forward = {err:.2e}")
    assert err < 1e-5
    assert (logits.argmax(-1) == jax_logits.argmax(-1)).all()


def test_swapping_gate_and_up_is_detected(tiny4, jax_logits, tmp_path):
    """The comparison can fail: reading linear_v as the GELU side moves the logits far off."""
    export(tiny4, tmp_path / "sg", format="sglang", dtype="f32", config=TINY4)
    tensors, _ = _load_folder(tmp_path / "sg")
    swapped = dict(SGLANG_ROLES, gate=SGLANG_ROLES["up"], up=SGLANG_ROLES["gate"])
    logits = reference_forward(TOKENS, TINY4, by_names(tensors, swapped), TINY4.num_layers)
    assert rel_l2(logits, jax_logits) > 1e-2


@pytest.mark.parametrize("fmt", ["sglang", "hf"])
def test_config_json_has_every_field_the_loader_reads(tiny4, tmp_path, fmt):
    export(tiny4, tmp_path / fmt, format=fmt, dtype="bf16", config=TINY4)
    config = json.loads((tmp_path / fmt / "config.json").read_text())
    common = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_experts_per_tok": 2, "rms_norm_eps": 1e-5,
              "embedding_multiplier_scale": TINY4.embedding_multiplier_scale,
              "output_multiplier_scale": TINY4.output_multiplier_scale, "intermediate_size": TINY4.ffn_size,
              "max_position_embeddings": 8192, "pad_token_id": 0, "torch_dtype": "bfloat16"}
    specific = ({"architectures": ["Grok1ForCausalLM"], "num_local_experts": 8, "head_dim": 16,
                 "moe_intermediate_size": TINY4.ffn_size, "load_presharded_moe": False,
                 "load_presharded_attn": False, "load_presharded_embedding": False, "residual_moe": False}
                if fmt == "sglang" else
                {"architectures": ["Grok1ModelForCausalLM"], "num_experts": 8, "tie_word_embeddings": True,
                 "attn_output_multiplier": TINY4.attn_output_multiplier})
    for key, value in {**common, **specific}.items():
        assert config[key] == value, key


def test_bf16_safetensors_are_the_rounded_f32(tiny4, tmp_path):
    export(tiny4, tmp_path / "f32", format="hf", dtype="f32", config=TINY4)
    export(tiny4, tmp_path / "bf16", format="hf", dtype="bf16", config=TINY4)
    f32, _ = _load_folder(tmp_path / "f32")
    bf16, _ = _load_folder(tmp_path / "bf16")
    name = "model.layers.1.moe_block.experts.5.linear_1.weight"
    assert str(bf16[name].dtype) == "bfloat16" and bf16["model.norm.scale"].dtype == np.float32
    np.testing.assert_array_equal(bf16[name].astype(np.float32),
                                  f32[name].astype(bf16[name].dtype).astype(np.float32))


def test_dry_run_lists_every_tensor_and_writes_nothing(tiny4, out_dir):
    report = export(tiny4, out_dir / "x.gguf", format="gguf", dtype="q8_0", config=TINY4, dry_run=True)
    assert not list(out_dir.iterdir())
    lines = report.table.splitlines()
    assert len(lines) == 2 + 2 + 12 * TINY4.num_layers
    assert "blk.1.ffn_down_exps.weight" in report.table and lines[-1].startswith("total: 26 tensors")
    # q8_0 rows come in blocks of 32: the 344-wide down projection falls back to bf16
    down = next(t for t in report.tensors if t.name == "blk.0.ffn_down_exps.weight")
    gate = next(t for t in report.tensors if t.name == "blk.0.ffn_gate_exps.weight")
    assert (down.dtype, gate.dtype, gate.shape) == ("bf16", "q8_0", (8, TINY4.ffn_size, 64))


def test_layer_range_exports_renumbered_layers(tiny4, tmp_path):
    tensors = plan_tensors(TINY4, "sglang", "bf16", [1])
    assert all(".layers.0." in t.name for t in tensors if ".layers." in t.name)
    assert all("decoder_layer_1/" in t.source for t in tensors if ".layers." in t.name)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"format": "onnx"}, "unknown export format 'onnx'; choose one of gguf, sglang, hf"),
    ({"format": "gguf", "dtype": "int4"}, "unknown export dtype 'int4'"),
    ({"format": "sglang", "dtype": "q8_0"}, "q8_0 is a GGUF block format"),
    ({"format": "gguf", "layers": "1-5"}, "layer 5 does not exist: the model has layers 0-1"),
    ({"format": "gguf", "shard_size": "lots"}, "bad size 'lots'"),
])
def test_bad_input_is_refused_before_writing(tiny4, out_dir, kwargs, match):
    with pytest.raises(UsageError, match=match):
        export(tiny4, out_dir / "out", config=TINY4, **kwargs)
    assert not list(out_dir.iterdir())


def test_existing_destination_needs_force(tiny4, out_dir):
    dst = out_dir / "m.gguf"
    dst.write_bytes(b"old")
    with pytest.raises(UsageError, match=r"m.gguf: destination exists; pass --force"):
        export(tiny4, dst, format="gguf", config=TINY4)
    assert dst.read_bytes() == b"old"
    export(tiny4, dst, format="gguf", config=TINY4, force=True)
    assert dst.read_bytes()[:4] == b"GGUF"


def test_not_enough_disk_is_refused_up_front(tiny4, out_dir, monkeypatch):
    monkeypatch.setenv("GROKWEIGHTS_FREE_SPACE_BYTES", "1000")
    with pytest.raises(InsufficientSpaceError, match=r"not enough free space .* bytes to export 26 tensors.*1,000 "
                                                      r"available"):
        export(tiny4, out_dir / "m.gguf", format="gguf", config=TINY4)
    assert not list(out_dir.iterdir())


def test_interrupted_export_leaves_no_complete_looking_file_and_rerun_restarts(tiny4, out_dir):
    dst = out_dir / "m.gguf"

    def boom(tensor):
        if tensor.name == "blk.1.attn_q.weight":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export(tiny4, dst, format="gguf", config=TINY4, on_tensor=boom)
    assert not list(out_dir.iterdir())  # the staging folder removed; nothing under the final name
    report = export(tiny4, dst, format="gguf", config=TINY4)
    assert [p.name for p in out_dir.iterdir()] == ["m.gguf"] and report.files == [str(dst)]


def test_split_gguf_is_named_and_keyed_like_llama_cpp(tiny4, out_dir):
    import gguf

    report = export(tiny4, out_dir / "grok.gguf", format="gguf", dtype="f32", config=TINY4, shard_size="1M")
    names = sorted(p.name for p in out_dir.iterdir())
    count = len(names)
    assert count > 1 and names == [f"grok-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    seen = []
    for i, path in enumerate(sorted(out_dir.iterdir())):
        reader = gguf.GGUFReader(path)
        fields = {k: reader.fields[k].contents() for k in ("split.no", "split.count", "split.tensors.count")}
        assert fields == {"split.no": i, "split.count": count, "split.tensors.count": len(report.tensors)}
        seen += [t.name for t in reader.tensors]
    assert seen == [t.name for t in report.tensors]


def test_export_does_not_import_jax(tiny4, tmp_path):
    code = ("import sys, grokweights, grokweights.engines._plan; from tests.export_reference import TINY4; "
            f"grokweights.export({str(tiny4)!r}, {str(tmp_path / 'o')!r}, format='sglang', config=TINY4); "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_export_dry_run_write_and_refusal(tiny4, out_dir):
    from click.testing import CliRunner

    from grokweights.cli import main

    config = out_dir.parent / "tiny4.json"
    config.write_text(TINY4.to_json())
    runner = CliRunner()
    dry = runner.invoke(main, ["export", str(tiny4), str(out_dir / "m.gguf"), "--format", "gguf", "--config",
                               str(config), "--dry-run"])
    assert dry.exit_code == 0 and "blk.1.ffn_up_exps.weight" in dry.output and not list(out_dir.iterdir())
    done = runner.invoke(main, ["export", str(tiny4), str(out_dir / "hf"), "--format", "hf", "--config",
                                str(config), "--json", "-q"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["tensors"] == len(plan_tensors(TINY4, "hf", "bf16", range(2)))
    bad = runner.invoke(main, ["export", str(tiny4), str(out_dir / "x"), "--format", "onnx", "--config", str(config)])
    assert bad.exit_code == 2 and "unknown export format 'onnx'" in bad.output


@pytest.mark.parametrize(("rows", "cols", "start", "stop"), [(64, 48, 0, 48), (2048, 344, 8, 336), (13, 40, 0, 40),
                                                              (24, 64, 3, 50)])
def test_blocked_transpose_is_the_transpose(rows, cols, start, stop):
    from grokweights.engines._kernels import transpose

    src = np.random.default_rng(0).integers(-128, 128, (rows, cols), dtype=np.int8)
    out = np.empty((stop - start, rows), np.int8)
    np.testing.assert_array_equal(transpose(src[:, start:stop], out), src[:, start:stop].T)


def test_bf16_bits_round_like_ml_dtypes():
    from grokweights.checkpoint.dtypes import bfloat16
    from grokweights.engines._kernels import bf16_bits

    rng = np.random.default_rng(1)
    values = (rng.integers(-128, 128, 4096) * rng.standard_normal(4096)).astype(np.float32)
    ties = (np.arange(1, 257, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # exactly halfway
    values = np.concatenate([values, ties, -ties, np.array([np.inf, -np.inf, 0.0, -0.0, 3.4e38], np.float32)])
    out = np.empty(values.shape, np.uint16)
    np.testing.assert_array_equal(bf16_bits(values, out), values.astype(bfloat16()).view(np.uint16))
