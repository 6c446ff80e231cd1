"""Environment variables, defaults and file names, in one place.

``MANIFESTS_DIR``, ``DISABLE_PROGRESS`` and ``DEBUG`` are read from the environment once, when this module is
imported; the free-space override (``FREE_SPACE_ENV``) is read each time free space is measured, so a test
or a rehearsal can set it at any moment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: folder of the official checkpoint inside a download.
CKPT_DIRNAME = "ckpt-0"
#: file name of shard ``i`` (the ``_000`` suffix is the release's host index).
SHARD_NAME_FORMAT = "tensor{index:05d}_000"
#: what every shard file name matches (group 1: the index).
SHARD_RE = re.compile(r"tensor(\d{5})_000")
#: the same, as a glob.
SHARD_GLOB = "tensor*_000"
#: manifest written beside a checkpoint by ``fetch`` and ``synth`` (``manifest create`` writes where ``-o`` says).
LOCAL_MANIFEST_NAME = "grokweights-manifest.json"
#: index file of a resharded store, written last.
STORE_INDEX_NAME = "grokweights.json"
#: a local store's writer lock file (held with flock while reshard writes).
STORE_LOCK_NAME = ".grokweights.lock"
#: ``tensorstore`` makes every store read and write go through tensorstore's zarr3 driver (the reference),
#: instead of the verified fast path chosen automatically for uncompressed arrays (see docs/store.md).
STORE_IO_ENV = "GROKWEIGHTS_STORE_IO"



def _shipped_manifests_dir() -> Path:
    """``manifests/`` of a source checkout, or ``grokweights/manifests/`` of an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "manifests", here.parent / "manifests"):
        if candidate.is_dir():
            return candidate
    return here / "manifests"


#: shipped manifests (``grok-1`` -> ``manifests/grok-1.json``).
MANIFESTS_DIR = Path(os.environ.get("GROKWEIGHTS_MANIFESTS_DIR") or _shipped_manifests_dir())

#: set to 1 to disable every progress bar.
DISABLE_PROGRESS = os.environ.get("GROKWEIGHTS_DISABLE_PROGRESS", "").lower() in {"1", "true", "yes"}
#: set to 1 to let the CLI print tracebacks for grokweights errors.
DEBUG = os.environ.get("GROKWEIGHTS_DEBUG", "").lower() in {"1", "true", "yes"}

#: overrides the free-space figure every preflight sees (bytes): to rehearse a full disk.
FREE_SPACE_ENV = "GROKWEIGHTS_FREE_SPACE_BYTES"

#: read size for streaming hashes (large reads keep Python out of the way).
HASH_CHUNK_BYTES = 8 * 1024 * 1024
#: slab size for streaming writes of large payloads.
WRITE_CHUNK_BYTES = 16 * 1024 * 1024


def shard_name(index: int) -> str:
    """The file name of shard ``index`` (``tensor00012_000``)."""
    return SHARD_NAME_FORMAT.format(index=index)

#: what to do when llama.cpp (a third-party library) crashes: it is built for the build machine's CPU unless
#: told otherwise, and its AMX kernels die with SIGILL on some CPUs (docs/export.md, "llama.cpp and the CPU").
LLAMA_CPP_CRASH_HINT = ("the crash is inside llama.cpp, not grokweights: rebuild llama-cpp-python for a portable CPU "
                        "baseline without pip's cache, CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install --no-cache-dir "
                        "--force-reinstall llama-cpp-python (see docs/export.md)")
