"""grokweights export from a store (``reshard`` / ``fetch --reshard``): the same bytes as from its ``ckpt-0/``."""

from __future__ import annotations

import filecmp

import pytest

from grokweights.engines import export
from grokweights.errors import UsageError

from .export_reference import TINY4

#: every format and every dtype it takes
CASES = [("gguf", d) for d in ("f32", "bf16", "f16", "q8_0")] + [
    (f, d) for f in ("sglang", "hf") for d in ("f32", "bf16", "f16")]


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.constants import LOCAL_MANIFEST_NAME

    root = tmp_path_factory.mktemp("tiny4")
    synthesize(root, TINY4, seed=3)
    create_manifest(root, name="tiny4", config=TINY4).save(root / LOCAL_MANIFEST_NAME)  # export verifies
    return root


@pytest.fixture(scope="module")
def stores(tiny4, tmp_path_factory):
    """Stores of the checkpoint on two meshes (one re-blocks the 4 scale blocks to 8), zstd, a layer subset,
    and a bfloat16 store."""
    from grokweights.store import reshard

    root = tmp_path_factory.mktemp("stores")
    made = {}
    for name, kwargs in {"d2m4": {"mesh": "data=2,model=4"},
                         "d1m8_zstd": {"mesh": "data=1,model=8", "compression": "zstd"},
                         "layer1": {"mesh": "data=4,model=2", "layers": "1"},
                         "bf16": {"mesh": "data=2,model=4", "dtype": "bfloat16"}}.items():
        reshard(tiny4, root / name, config=TINY4, verify=False, **kwargs)
        made[name] = root / name
    return made


def _same_output(a, b):
    """The folders ``a`` and ``b`` hold the same files (names and bytes), folders compared recursively."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and names
    for name in names:
        if (a / name).is_dir():
            _same_output(a / name, b / name)
        else:
            assert filecmp.cmp(a / name, b / name, shallow=False), f"{name} differs"


@pytest.mark.parametrize(("fmt", "dtype"), CASES)
@pytest.mark.parametrize("store", ["d2m4", "d1m8_zstd"])
def test_store_export_is_byte_for_byte_the_checkpoint_export(tiny4, stores, tmp_path, fmt, dtype, store):
    name = "m.gguf" if fmt == "gguf" else "m"
    from_ckpt = export(tiny4, tmp_path / "ckpt" / name, format=fmt, dtype=dtype, config=TINY4, shard_size="1M")
    from_store = export(stores[store], tmp_path / "store" / name, format=fmt, dtype=dtype, shard_size="1M")
    assert len(from_store.files) == len(from_ckpt.files) > 1
    _same_output(tmp_path / "ckpt", tmp_path / "store")


@pytest.mark.parametrize("fmt", ["gguf", "hf"])
def test_store_of_one_layer_exports_that_layer(tiny4, stores, tmp_path, fmt):
    name = "m.gguf" if fmt == "gguf" else "m"
    export(tiny4, tmp_path / "ckpt" / name, format=fmt, dtype="bf16", config=TINY4, layers="1")
    report = export(stores["layer1"], tmp_path / "store" / name, format=fmt, dtype="bf16")
    assert report.layers == [1]
    _same_output(tmp_path / "ckpt", tmp_path / "store")


def test_layers_a_store_lacks_are_refused(stores, tmp_path):
    with pytest.raises(UsageError, match=r"layer1: the store holds decoder layers 1, not 0; pass --layers"):
        export(stores["layer1"], tmp_path / "out" / "m.gguf", format="gguf", layers="0-1")
    assert not (tmp_path / "out").exists()


def test_bfloat16_store_exports_the_same_bf16_bytes(tiny4, stores, tmp_path):
    """A bfloat16 store holds the dequantised weights rounded as the export rounds them."""
    for fmt, name in (("gguf", "m.gguf"), ("sglang", "m")):
        export(tiny4, tmp_path / "ckpt" / name, format=fmt, dtype="bf16", config=TINY4)
        export(stores["bf16"], tmp_path / "store" / name, format=fmt, dtype="bf16")
    _same_output(tmp_path / "ckpt", tmp_path / "store")


def test_a_config_other_than_the_stores_is_refused(stores, tmp_path):
    import dataclasses

    with pytest.raises(UsageError, match="the store's model config differs from the one given"):
        export(stores["d2m4"], tmp_path / "m.gguf", format="gguf", config=dataclasses.replace(TINY4, scale_blocks=8))


def test_cli_exports_from_a_store(stores, tmp_path):
    from click.testing import CliRunner

    from grokweights.cli import main

    done = CliRunner().invoke(main, ["export", str(stores["d2m4"]), str(tmp_path / "m.gguf"), "--format", "gguf",
                                     "--dtype", "q8_0", "--json", "-q"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "m.gguf").read_bytes()[:4] == b"GGUF"
