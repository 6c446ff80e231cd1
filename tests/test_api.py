"""The public API: every advertised name resolves, and functions stay functions."""

import importlib
import subprocess
import sys

import grokweights


def test_every_public_name_resolves():
    for name in grokweights.__all__:
        assert getattr(grokweights, name) is not None, name


def test_functions_that_share_a_module_name_stay_functions():
    for package, name in (("checkpoint", "verify"), ("runtime", "load"), ("runtime", "smoke"), ("torrent", "fetch"),
                          ("store", "reshard")):
        importlib.import_module(f"grokweights.{package}.{name}")
        assert callable(getattr(grokweights, name)), name
        assert getattr(grokweights, name).__name__ == name
        if package != "checkpoint":  # the lazy format-core face leaves its module names to the modules
            assert getattr(importlib.import_module(f"grokweights.{package}"), name).__name__ == name


def test_the_format_core_does_not_import_heavy_stages():
    code = ("import sys, grokweights, grokweights.checkpoint.verify, grokweights.checkpoint.inspection, "
            "grokweights.checkpoint.manifest_ops, grokweights.cli.core; "
            "print(sorted(m for m in ('jax', 'tensorstore', 'libtorrent') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
