import os

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.inspection import infer_config, inspect_checkpoint, scan_headers


def test_clean_checkpoint_inspects_ok(tiny_checkpoint):
    report = inspect_checkpoint(tiny_checkpoint)
    assert report.ok and len(report.files) == 26
    assert report.config == preset("tiny")
    first = report.files[2].to_dict()
    assert first["path"] == "transformer/decoder_layer_0/moe/linear" and first["kind"] == "quantized"
    assert first["shape"] == [8, 64, 344] and first["scales_shape"] == [8, 1, 344]


def test_infers_the_layout_without_a_manifest(tiny_checkpoint):
    (tiny_checkpoint / "grokweights-manifest.json").unlink()
    report = inspect_checkpoint(tiny_checkpoint)
    assert report.ok and "tiny" in report.config_source
    config, how = infer_config(scan_headers(tiny_checkpoint / "ckpt-0"))
    assert config == preset("tiny")


def test_reports_every_disagreement(tiny_checkpoint):
    ckpt = tiny_checkpoint / "ckpt-0"
    os.replace(ckpt / "tensor00002_000", ckpt / "tmp")  # swap moe/linear and moe/linear_1
    os.replace(ckpt / "tensor00003_000", ckpt / "tensor00002_000")
    os.replace(ckpt / "tmp", ckpt / "tensor00003_000")
    (ckpt / "tensor00020_000").unlink()
    (ckpt / "tensor00021_000").write_bytes(b"\x80\x04garbage")
    report = inspect_checkpoint(tiny_checkpoint)
    text = "\n".join(report.problems)
    assert not report.ok
    assert "tensor00002_000 (transformer/decoder_layer_0/moe/linear/w): weight shape: expected [8, 64, 344], " \
           "found [8, 344, 64]" in text
    assert "misordered?" in text
    assert "tensor00020_000: missing" in text
    assert "tensor00021_000" in text and "unreadable" in text
    assert report.missing == ("tensor00020_000",)
