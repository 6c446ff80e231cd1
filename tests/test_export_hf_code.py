"""``export --format hf --hf-code``: the model code beside the weights, so ``from_pretrained`` works offline.

``transformers`` and ``torch`` come with the ``int8-test`` extra (compressed-tensors pulls them in); without
them the loading tests are skipped. The model is loaded in a subprocess with the hub switched off.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from grokweights.engines import export
from grokweights.errors import UsageError

from .export_reference import TINY4, rel_l2

TOKENS = [[5, 17, 301, 42, 7, 99, 3, 250, 11, 64, 400, 2], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 511, 12]]
_LOAD = """
import json, sys, numpy as np, torch
from transformers import AutoModelForCausalLM
model, info = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True, dtype=torch.float32,
                                                   output_loading_info=True)
with torch.no_grad():
    logits = model(torch.tensor(json.loads(sys.argv[3]))).logits
np.save(sys.argv[2], logits.numpy())
print(json.dumps({k: sorted(map(str, v)) for k, v in info.items()}))
"""


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.constants import LOCAL_MANIFEST_NAME

    root = tmp_path_factory.mktemp("tiny4")
    synthesize(root, TINY4, seed=3)
    create_manifest(root, name="tiny4", config=TINY4).save(root / LOCAL_MANIFEST_NAME)
    return root


def _load_offline(folder, tmp_path):
    pytest.importorskip("transformers", reason="transformers is not installed: pip install -e '.[int8-test]'")
    pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[int8-test]'")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "PATH": "/usr/bin:/bin"}
    out = tmp_path / "logits.npy"
    done = subprocess.run([sys.executable, "-c", _LOAD, str(folder), str(out), json.dumps(TOKENS)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out), json.loads(done.stdout.strip().splitlines()[-1])


def test_local_code_loads_offline_and_matches_grokweights_forward(tiny4, tmp_path):
    import jax.numpy as jnp

    import grokweights

    export(tiny4, tmp_path / "hf", format="hf", dtype="f32", config=TINY4, hf_code="local")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_grok1.Grok1Config",
                                  "AutoModelForCausalLM": "modeling_grok1.Grok1ModelForCausalLM"}
    logits, info = _load_offline(tmp_path / "hf", tmp_path)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    want = np.asarray(grokweights.forward(grokweights.load(tiny4, config=TINY4), np.array(TOKENS, np.int32), TINY4,
                                          dtype=jnp.float32))
    err = rel_l2(logits.astype(np.float64), want)
    print(f"hf --hf-code local, transformers (torch f32) vs grokweights.forward: rel L2 {err:.2e}")
    assert err < 1e-5 and (logits.argmax(-1) == want.argmax(-1)).all()


def test_a_folder_of_hpcai_code_is_copied_and_named(tiny4, tmp_path):
    """A user's copy of the model code (here grokweights' own files standing in for hpcai-tech's) goes beside."""
    from grokweights.engines._hfcode import HF_CODE_FILES, resolve_hf_code

    user = tmp_path / "hpcai-code"
    user.mkdir()
    for name in HF_CODE_FILES:
        (user / name).write_bytes((resolve_hf_code("local", "hf") / name).read_bytes() + b"# user's copy\n")
    report = export(tiny4, tmp_path / "hf", format="hf", dtype="bf16", config=TINY4, hf_code=user)
    for name in HF_CODE_FILES:
        assert (tmp_path / "hf" / name).read_bytes().endswith(b"# user's copy\n")
        assert str(tmp_path / "hf" / name) in report.files
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["auto_map"]["AutoConfig"] == \
        "configuration_grok1.Grok1Config"


def test_hub_code_by_default(tiny4, tmp_path):
    export(tiny4, tmp_path / "hf", format="hf", dtype="bf16", config=TINY4)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "hpcai-tech/grok-1--modeling_grok1.Grok1ModelForCausalLM"
    assert not (tmp_path / "hf" / "modeling_grok1.py").exists()


@pytest.mark.parametrize(("fmt", "code", "match"), [
    ("sglang", "local", "--hf-code is for --format hf"),
    ("hf", "nowhere", r"nowhere: no configuration_grok1.py or modeling_grok1.py here")])
def test_bad_hf_code_is_refused_before_writing(tiny4, tmp_path, fmt, code, match):
    with pytest.raises(UsageError, match=match):
        export(tiny4, tmp_path / "out", format=fmt, config=TINY4, hf_code=tmp_path / code if code != "local" else code)
    assert not (tmp_path / "out").exists()
