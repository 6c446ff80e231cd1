"""``export --dtype q4_k_m|q6_k|q2_k|...``: llama.cpp's own quantizer, tensor by tensor, without a BF16 GGUF.

Every tensor's type and bytes are compared with what ``llama_model_quantize`` (``llama-quantize``) writes from a
float32 GGUF of the same weights (the precision the export feeds it), on two models: the tiny structure (rows of
64 and 344 values: every K-quant falls back, as llama.cpp decides) and a 256-wide one (real K-quant blocks).
llama.cpp then runs the result. llama.cpp (and every export through its quantizer) runs in a child process
(tests/llama_child.py), so a crash fails one test with its signal, never the test run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from grokweights.engines import export
from grokweights.errors import UsageError

from .export_reference import TINY4, rel_l2
from .llama_child import AVAILABLE, SKIP_REASON, isolated_export, llama_logits, llama_quantize

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)]

#: rows of 256 values: Q4_K / Q5_K / Q6_K / Q2_K blocks without fallback (q 4x64, kv 2x64, experts 512 wide)
WIDE = dataclasses.replace(TINY4, emb_size=256, key_size=64, widening_factor=3)
TOKENS = [[5, 17, 301, 42, 7, 99, 3, 250, 11, 64, 400, 2, 128, 256, 77, 13],
          [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 511, 12, 500, 499, 31, 32]]

def _tensors(path) -> dict[str, tuple[str, bytes]]:
    import gguf

    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name.lower(), bytes(np.asarray(t.data).reshape(-1).view(np.uint8)))
            for t in reader.tensors}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The two checkpoints and their float32 GGUF exports."""
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.constants import LOCAL_MANIFEST_NAME

    made = {}
    for name, config in (("tiny4", TINY4), ("wide", WIDE)):
        root = tmp_path_factory.mktemp(name)
        synthesize(root / "ckpt", config, seed=11)
        create_manifest(root / "ckpt", name=name, config=config).save(root / "ckpt" / LOCAL_MANIFEST_NAME)
        f32 = export(root / "ckpt", root / "f32.gguf", format="gguf", dtype="f32", config=config).files[0]
        made[name] = (root, config, f32)
    return made


@pytest.mark.parametrize("ftype", ["q4_k_m", "q6_k", "q2_k", "q4_0", "q5_k_s", "q3_k_m"])
@pytest.mark.parametrize("model", ["wide", "tiny4"])
def test_every_tensor_is_what_llama_quantize_writes(models, tmp_path, model, ftype):
    root, config, f32 = models[model]
    from grokweights.engines._kquant import FTYPES

    assert llama_quantize(f32, tmp_path / "ref.gguf", FTYPES[ftype]) == 0
    report = isolated_export(root / "ckpt", tmp_path / "ours.gguf", format="gguf", dtype=ftype, config=config)
    want, got = _tensors(tmp_path / "ref.gguf"), _tensors(tmp_path / "ours.gguf")
    assert sorted(got) == sorted(want)
    for name, (dtype, data) in want.items():
        assert got[name][0] == dtype, f"{name}: {got[name][0]} vs llama-quantize's {dtype}"
        assert got[name][1] == data, f"{name} ({dtype}): bytes differ from llama-quantize's"
    types = {t.dtype for t in report.tensors}
    if model == "wide" and ftype == "q4_k_m":  # the mix: Q4_K, Q6_K for the embedding and some ffn_down, Q8_0 ...
        assert {"q4_k", "q6_k"} <= types, types
    print(f"{model} {ftype}: {sorted(types)}")


def test_llama_cpp_runs_the_k_quants(models, tmp_path):
    """llama.cpp loads and runs each export; the error against the BF16 export grows as the bits shrink."""
    root, config, _ = models["wide"]
    paths = {d: isolated_export(root / "ckpt", tmp_path / f"{d}.gguf", format="gguf", dtype=d, config=config).files[0]
             for d in ("bf16", "q8_0", "q6_k", "q4_k_m", "q2_k")}
    base = llama_logits(paths["bf16"], TOKENS)
    errors = {}
    for dtype in ("q8_0", "q6_k", "q4_k_m", "q2_k"):
        logits = llama_logits(paths[dtype], TOKENS)
        assert np.isfinite(logits).all()
        errors[dtype] = rel_l2(logits, base)
        top1 = float((logits.argmax(-1) == base.argmax(-1)).mean())
        print(f"\nllama.cpp {dtype} vs BF16: rel L2 {errors[dtype]:.3e}, top-1 {100 * top1:.1f} %")
        assert top1 >= (0.5 if dtype == "q2_k" else 0.9)  # measured: 100 % for every type
    assert errors["q8_0"] < errors["q6_k"] < errors["q4_k_m"] < errors["q2_k"] < 1.0
    assert errors["q4_k_m"] < 0.2


def test_k_quants_are_gguf_only(models, tmp_path):
    root, config, _ = models["tiny4"]
    with pytest.raises(UsageError, match="dtype q4_k_m is a llama.cpp quantisation"):
        export(root / "ckpt", tmp_path / "x", format="sglang", dtype="q4_k_m", config=config)


def test_k_quants_from_a_store_are_the_same_bytes(models, tmp_path):
    """A store (fetch --reshard) quantises to the same file as the ckpt-0/ it came from."""
    import filecmp

    from grokweights.store import reshard

    root, config, _ = models["wide"]
    reshard(root / "ckpt", tmp_path / "store", "data=2,model=4", config=config, verify=False)
    a = isolated_export(root / "ckpt", tmp_path / "a.gguf", format="gguf", dtype="q4_k_m", config=config)
    b = isolated_export(tmp_path / "store", tmp_path / "b.gguf", format="gguf", dtype="q4_k_m")
    assert filecmp.cmp(a.files[0], b.files[0], shallow=False)
    assert [t.dtype for t in a.tensors] == [t.dtype for t in b.tensors]
