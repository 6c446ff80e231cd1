import json

import numpy as np
import pytest

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.checkpoint.shards import read_shard
from grokweights.checkpoint.synth import synthesize

from .helpers import run_python


def test_deterministic_per_seed(tmp_path):
    a = synthesize(tmp_path / "a", preset("tiny"), seed=7)
    b = synthesize(tmp_path / "b", preset("tiny"), seed=7)
    c = synthesize(tmp_path / "c", preset("tiny"), seed=8)
    names = sorted(p.name for p in a.iterdir())
    assert names == [s.file for s in layout(preset("tiny"))]
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert any((a / n).read_bytes() != (c / n).read_bytes() for n in names)


def test_values_look_like_a_real_checkpoint(tmp_path):
    config = preset("tiny")
    ckpt = synthesize(tmp_path, config, seed=0)
    specs = {s.key: s for s in layout(config)}
    q = read_shard(ckpt / specs["transformer/decoder_layer_0/moe/linear/w"].file)
    assert q.weight.min() <= -120 and q.weight.max() >= 120  # spans the int8 range
    assert abs(float(q.weight.mean())) < 2 and 30 < float(q.weight.std()) < 70  # bell-shaped, centred
    scales = q.scales.astype(np.float32)
    assert (scales > 0).all() and 1e-4 < float(scales.mean()) < 1e-2
    norm = read_shard(ckpt / specs["transformer/decoder_layer_0/rms_norm/scale"].file)
    assert 0.8 < float(norm.mean()) < 1.2
    # the router does not always pick the same experts
    emb = read_shard(ckpt / specs["language_model/in_out_embed/embeddings"].file)
    router = read_shard(ckpt / specs["transformer/decoder_layer_0/router/w"].file)
    x = emb[:256] / np.sqrt((emb[:256] ** 2).mean(-1, keepdims=True))
    top1 = np.argmax(x @ router, axis=-1)
    assert len(set(top1.tolist())) >= 6


@pytest.fixture(scope="module")
def full_width_shard(tmp_path_factory):
    """One full-width Grok-1 MoE tensor (1.6 GB) written in a fresh process; returns (path, RSS figures)."""
    path = tmp_path_factory.mktemp("full") / "tensor00002_000"
    code = f"""
import json, resource
from grokweights.checkpoint.config import preset
from grokweights.checkpoint.layout import layout
from grokweights.checkpoint.shards import write_shard
from grokweights.checkpoint.synth import synth_value
config = preset("grok-1", layers=1)
spec = layout(config)[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
write_shard({str(path)!r}, synth_value(spec, config, seed=0))
print(json.dumps({{"before": before, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    yield path, json.loads(result.stdout)
    path.unlink(missing_ok=True)


@pytest.mark.slow
def test_full_width_layer_streams_with_bounded_memory(full_width_shard):
    """Writing a 1.6 GB tensor peaks far below its size (values are generated slab by slab)."""
    path, figures = full_width_shard
    assert path.stat().st_size == 1_611_137_347
    assert (figures["peak"] - figures["before"]) * 1024 < 200 * 2**20, figures


@pytest.mark.slow
def test_opening_and_inspecting_a_large_shard_costs_kilobytes(full_width_shard):
    """read_header + read_shard of a >1 GB shard, and a look at a slice, grow RSS by < 100 MB."""
    path, _ = full_width_shard
    code = f"""
import json, psutil
from grokweights.checkpoint.shards import read_header, read_shard
proc = psutil.Process()
before = proc.memory_info().rss
header = read_header({str(path)!r})
q = read_shard({str(path)!r})
corner = int(q.weight[0, :4, :4].astype("int64").sum())
after = proc.memory_info().rss
print(json.dumps({{"growth": after - before, "shape": list(q.weight.shape), "kind": header.kind}}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["shape"] == [8, 6144, 32768] and figures["kind"] == "quantized"
    assert figures["growth"] < 100 * 2**20, figures
