"""Synthetic checkpoints in the exact official format, for tests, demos and benchmarks.

``synthesize(out, config, seed=S)`` writes ``out/ckpt-0/tensor*_000`` for every tensor of
``layout(config)``, byte-for-byte in the release's pickle format, with values that look like the real
thing: int8 weights spanning the whole range with a bell-shaped histogram, positive bfloat16 block scales
of a plausible magnitude (about ``1 / (std(int8) * sqrt(fan_in))``), RMSNorm scales near 1, and a router
whose logits differ enough between tokens that different experts win.

Values are deterministic per ``(seed, tensor index, slab)``; large tensors are generated and written one
slab (a few MiB) at a time, so peak memory stays far below the largest tensor.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .._space import require_space
from ..constants import CKPT_DIRNAME, SHARD_RE
from ..errors import UsageError
from .config import ModelConfig
from .dtypes import bfloat16
from .files import in_checkpoint_folder
from .layout import TensorSpec, layout
from .pickle_desc import NUMPY1_MODULE
from .shards import LazyArray, QuantizedWeight8bit, ShardValue, write_checkpoint

__all__ = ["synthesize", "synth_value"]

logger = logging.getLogger(__name__)

#: rows of a slab are chosen so a slab holds about this many bytes (fixed: values do not depend on it
#: at run time, only on the seed).
_SLAB_BYTES = 8 * 1024 * 1024
#: standard deviation of the triangular int8 distribution below: sqrt(2 * (128^2 / 12)) / 2 * 2 ~ 52
_INT8_STD = 52.0


def _rng(seed: int, index: int, slab: int = 0, part: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, index, slab, part])


def _int8_slab(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` int8 values over the whole range, bell-shaped: the sum of two uniform halves."""
    a = np.frombuffer(rng.bytes(n), dtype=np.int8) >> 1
    b = np.frombuffer(rng.bytes(n), dtype=np.int8) >> 1
    return a + b  # -128..126, triangular


def _slabs(shape: tuple[int, ...], dtype: np.dtype, seed: int, index: int,
           make: Callable[[np.random.Generator, int], np.ndarray]) -> LazyArray:
    total = math.prod(shape)
    per_slab = max(1, _SLAB_BYTES // dtype.itemsize)

    def chunks() -> Iterator[np.ndarray]:
        for slab, start in enumerate(range(0, total, per_slab)):
            yield make(_rng(seed, index, slab), min(per_slab, total - start)).astype(dtype, copy=False)

    return LazyArray(tuple(shape), dtype, chunks)


def synth_value(spec: TensorSpec, config: ModelConfig, seed: int = 0) -> ShardValue:
    """The synthetic value of one tensor (lazy for large payloads)."""
    rng = _rng(seed, spec.index, part=1)
    if spec.kind == "quantized":
        weight = _slabs(spec.shape, np.dtype(np.int8), seed, spec.index, _int8_slab)
        fan_in = spec.shape[-2]
        base = 1.0 / (_INT8_STD * math.sqrt(fan_in))
        jitter = rng.lognormal(mean=0.0, sigma=0.25, size=spec.scales_shape)
        scales = (base * jitter).astype(bfloat16())
        return QuantizedWeight8bit(weight=weight, scales=scales)
    if spec.name == "scale":  # RMSNorm gains, near 1
        return (1.0 + 0.1 * rng.standard_normal(spec.shape)).astype(np.float32)
    if spec.name == "embeddings":
        std = 1.0 / math.sqrt(spec.shape[-1])
        return _slabs(spec.shape, np.dtype(np.float32), seed, spec.index,
                      lambda r, n: (std * r.standard_normal(n, dtype=np.float32)))
    # router: logits of unit-ish inputs should vary by a few units so the top-k changes between tokens
    return (2.0 / math.sqrt(spec.shape[0]) * rng.standard_normal(spec.shape)).astype(np.float32)


def _check_out(out_dir: str | os.PathLike[str]) -> None:
    """Refuse an empty --out (the current folder) and one in a checkpoint's folder (``ckpt-0``, or shards)."""
    text = os.fspath(out_dir)
    if not text.strip():
        raise UsageError("--out is empty (it would write into the current folder); name a folder such as tiny",
                         expected="a folder", actual=text)
    if in_checkpoint_folder(Path(text) / CKPT_DIRNAME):
        raise UsageError(f"{text}: is in a checkpoint's folder (a ckpt-0 or a folder of shards); --out takes the "
                         f"folder that will hold {CKPT_DIRNAME}/: choose another --out", path=text,
                         expected="a folder outside any checkpoint")


def _prepare(out_dir: Path, specs: list[TensorSpec], force: bool) -> None:
    """Refuse an existing checkpoint (unless ``force``: its shard files are then removed) and a full disk,
    before anything is written."""
    ckpt = out_dir / CKPT_DIRNAME
    existing = sorted(ckpt.iterdir()) if ckpt.is_dir() else []
    if existing and not force:
        raise UsageError(f"{ckpt} already holds {len(existing)} file(s); refusing to overwrite a checkpoint: "
                         "choose another --out or pass --force to replace it", path=str(ckpt))
    needed = sum(s.expected_file_size for s in specs)
    if force:
        needed -= sum(p.stat().st_size for p in existing if SHARD_RE.fullmatch(p.name) and p.is_file())
    require_space(out_dir, max(0, needed), what="for the synthetic checkpoint",
                  hint="free space, choose another --out or a smaller --preset/--layers")
    for path in existing:
        if force and SHARD_RE.fullmatch(path.name) and path.is_file():
            path.unlink()


def synthesize(out_dir: str | os.PathLike[str], config: ModelConfig, *, seed: int = 0,
               numpy_module: str = NUMPY1_MODULE, force: bool = False,
               progress: Callable[[int], None] | None = None) -> Path:
    """Write a synthetic checkpoint for ``config`` to ``out_dir/ckpt-0``; returns that directory.

    Args:
        out_dir: folder to create ``ckpt-0/`` in.
        config: the model to synthesize (``preset("grok-1", layers=1)`` for one full-width layer).
        seed: values are a pure function of the seed and the tensor.
        numpy_module: the numpy spelling in the pickle stream (the release's numpy 1.x by default).
        force: replace the shard files of a checkpoint already in ``out_dir/ckpt-0`` (otherwise refused).
        progress: called with the byte count of each shard written.

    Raises:
        UsageError: ``out_dir`` is empty or in a checkpoint's folder; ``out_dir/ckpt-0`` is not empty (without
            ``force``).
        InsufficientSpaceError: the checkpoint does not fit (checked before anything is written).
    """
    specs = layout(config)
    _check_out(out_dir)
    _prepare(Path(out_dir), specs, force)

    def on_written(spec: TensorSpec, size: int) -> None:
        logger.debug("wrote %s (%d bytes)", spec.file, size)
        if progress is not None:
            progress(size)

    return write_checkpoint(out_dir, specs, lambda spec: synth_value(spec, config, seed),
                            numpy_module=numpy_module, on_written=on_written)
