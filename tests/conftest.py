"""Shared test set-up: 8 simulated CPU devices, no progress bars, every cache/home under tmp_path."""

from __future__ import annotations

import os

# must happen before jax is imported anywhere
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["GROKWEIGHTS_DISABLE_PROGRESS"] = "1"

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Point HOME and XDG caches at the test's tmp_path so nothing leaks into the user's folders."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory):
    """A synthetic tiny checkpoint (seed 0) with its manifest beside it; shared, do not modify."""
    from grokweights.checkpoint.config import preset
    from grokweights.checkpoint.manifest_ops import create_manifest
    from grokweights.checkpoint.synth import synthesize
    from grokweights.constants import LOCAL_MANIFEST_NAME

    root = tmp_path_factory.mktemp("tiny-source")
    synthesize(root, preset("tiny"), seed=0)
    create_manifest(root, name="tiny-test", config=preset("tiny")).save(root / LOCAL_MANIFEST_NAME)
    return root


@pytest.fixture
def tiny_checkpoint(tiny_source, tmp_path):
    """A private copy of the tiny checkpoint (folder holding ckpt-0/ and grokweights-manifest.json)."""
    import shutil

    copy = tmp_path / "tiny"
    shutil.copytree(tiny_source, copy)
    return copy
