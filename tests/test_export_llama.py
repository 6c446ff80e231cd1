"""llama.cpp runs the GGUF export: its logits against grokweights.forward in float32 on the same weights.

The checkpoint has Grok-1's full structure at tiny width (8 experts top-2, grouped-query attention, 4 scale
blocks). llama.cpp (through llama-cpp-python, built from source by ``make test``) loads the GGUF and
evaluates token ids, in a child process (tests/llama_child.py): a crash of llama.cpp fails the one test
with its signal, never the test run. The residual differences are the documented ones (docs/export.md): ggml's GELU
(tanh form evaluated through an f16 table), llama.cpp renormalising the top-2 gates (which the post-MoE
RMSNorm cancels up to its epsilon) and float32 summation order.
"""

from __future__ import annotations

import numpy as np
import pytest

from grokweights.engines import export

from .export_reference import TINY4, rel_l2
from .llama_child import AVAILABLE, SKIP_REASON, llama_logits, llama_metadata

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)]

TOKENS = np.array([[5, 17, 301, 42, 7, 99, 3, 250, 11, 64, 400, 2, 128, 256, 77, 13],
                   [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 511, 12, 500, 499, 31, 32]], dtype=np.int32)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.constants import LOCAL_MANIFEST_NAME

    root = tmp_path_factory.mktemp("tiny4-llama")
    synthesize(root, TINY4, seed=7)
    create_manifest(root, name="tiny4-llama", config=TINY4).save(root / LOCAL_MANIFEST_NAME)  # export verifies
    return root


@pytest.fixture(scope="module")
def reference(checkpoint):
    import jax.numpy as jnp

    import grokweights

    params = grokweights.load(checkpoint, config=TINY4)
    return np.asarray(grokweights.forward(params, TOKENS, TINY4, dtype=jnp.float32))


def _figures(name: str, got: np.ndarray, want: np.ndarray) -> tuple[float, float, float]:
    max_abs = float(np.abs(got - want).max())
    err = rel_l2(got, want)
    top1 = float((got.argmax(-1) == want.argmax(-1)).mean())
    print(f"\n{name}: max-abs {max_abs:.3e} (logit scale {np.abs(want).max():.2f}), rel L2 {err:.3e}, "
          f"top-1 {100 * top1:.1f} %")
    return max_abs, err, top1


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {dtype: export(checkpoint, out / f"tiny-{dtype}.gguf", format="gguf", dtype=dtype, config=TINY4).files[0]
            for dtype in ("f32", "bf16", "q8_0")}


def test_llama_cpp_f32_matches_grokweights_forward(exported, reference):
    got = llama_logits(exported["f32"], TOKENS)
    _, err, top1 = _figures("llama.cpp F32 vs grokweights.forward f32", got, reference)
    assert top1 == 1.0
    assert err < 1e-3  # measured 6e-5: ggml's f16 GELU table and summation order


def test_llama_cpp_bf16_matches_within_bf16_rounding(exported, reference):
    got = llama_logits(exported["bf16"], TOKENS)
    _, err, top1 = _figures("llama.cpp BF16 vs grokweights.forward f32", got, reference)
    assert top1 >= 0.95
    assert err < 2e-2  # measured 3e-3: bf16 rounding of every weight


def test_llama_cpp_q8_0_error_against_bf16(exported, reference):
    bf16 = llama_logits(exported["bf16"], TOKENS)
    q8 = llama_logits(exported["q8_0"], TOKENS)
    _figures("llama.cpp Q8_0 vs llama.cpp BF16", q8, bf16)
    _, err, _ = _figures("llama.cpp Q8_0 vs grokweights.forward f32", q8, reference)
    assert err < 5e-2  # measured 1e-2


def test_a_wrong_expert_assignment_would_fail(checkpoint, reference, tmp_path, monkeypatch):
    """The comparison can fail: the same export with gate and up swapped is far off in llama.cpp."""
    from grokweights.engines import _plan

    swapped = dict(_plan.GGUF_NAMES, gate="ffn_up_exps", up="ffn_gate_exps")
    monkeypatch.setattr(_plan, "GGUF_NAMES", swapped)
    path = export(checkpoint, tmp_path / "swapped.gguf", format="gguf", dtype="f32", config=TINY4).files[0]
    _, err, _ = _figures("llama.cpp F32, gate/up swapped", llama_logits(path, TOKENS), reference)
    assert err > 1e-2


def test_llama_cpp_sees_the_grok_metadata(exported):
    meta, n_vocab = llama_metadata(exported["f32"])
    assert meta["general.architecture"] == "grok"
    assert int(meta["grok.expert_count"]) == 8 and int(meta["grok.expert_used_count"]) == 2
    assert int(meta["grok.attention.head_count_kv"]) == 2 and n_vocab == TINY4.vocab_size
