"""The smoke test: load a store onto the devices, run the Grok-1 forward pass, and check what comes out.

``smoke(store, ...)`` loads (timed, bytes counted), compiles (timed), runs twice (timed, tokens/s) and
checks that the logits have the right shape, are finite and are deterministic; optionally that another
mesh (or one device) gives the same logits within a stated tolerance, and that they match a saved
fingerprint (:mod:`grokweights.runtime.fingerprint`). It returns a :class:`SmokeReport`; it raises only for bad
input, never for a failed check (``report.ok`` says whether every check passed).

``smoke_plan(store, ...)`` sizes the same run for this machine without loading anything
(:func:`grokweights.sharding.sizing.plan_memory`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..checkpoint.config import ModelConfig
from ..checkpoint.inspection import checkpoint_config
from ..errors import MeshError, UsageError
from ..sharding.mesh import GROK1_RULES, MeshSpec, as_mesh_spec, complete_mesh, default_mesh
from ..sharding.sizing import MachinePlan
from ..store import Store
from .devices import simulate_cpu_devices
from .fingerprint import Fingerprint, require_tolerance
from .sources import STORE, source_kind

__all__ = ["smoke", "smoke_plan", "simulate_cpu_devices", "SmokeReport", "Check", "TopToken", "DEFAULT_PROMPT",
           "default_tokens"]

logger = logging.getLogger(__name__)

#: the prompt used when a tokenizer is given without text.
DEFAULT_PROMPT = "The answer to life, the universe and everything is"
#: next tokens shown per sequence.
TOP_K = 5
#: largest max |difference| of logits allowed between two meshes, as a share of the logits' scale.
MESH_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


@dataclass(frozen=True)
class Check:
    """One check of a smoke test."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class TopToken:
    """A likely next token: its id, logit, and text when a tokenizer was given."""

    id: int
    logit: float
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "logit": self.logit, "text": self.text}


@dataclass(frozen=True)
class SmokeReport:
    """What a smoke test loaded, ran and found. ``ok`` is True when every check passed."""

    store: str
    source: str
    mesh: str
    devices: tuple[str, ...]
    layers: tuple[int, ...]
    dtype: str
    tokens: tuple[tuple[int, ...], ...]
    load_seconds: float
    load_bytes: int
    param_bytes: int
    compile_seconds: float
    run_seconds: float
    top: tuple[tuple[TopToken, ...], ...]
    checks: tuple[Check, ...]
    fingerprint: Fingerprint
    config: ModelConfig = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def tokens_per_second(self) -> float:
        return len(self.tokens) * len(self.tokens[0]) / max(self.run_seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "store": self.store, "source": self.source, "mesh": self.mesh,
            "devices": list(self.devices), "layers": list(self.layers), "dtype": self.dtype,
            "batch": len(self.tokens), "length": len(self.tokens[0]), "tokens": [list(t) for t in self.tokens],
            "load_seconds": self.load_seconds, "load_bytes": self.load_bytes, "param_bytes": self.param_bytes,
            "compile_seconds": self.compile_seconds, "run_seconds": self.run_seconds,
            "tokens_per_second": self.tokens_per_second,
            "top": [[t.to_dict() for t in row] for row in self.top], "checks": [c.to_dict() for c in self.checks],
            "fingerprint": self.fingerprint.to_dict(),
            "config": self.config.to_dict() if self.config is not None else None,
        }


@dataclass(frozen=True)
class _Source:
    """What is known of ``store`` before loading: its config, mesh, rules and layers."""

    path: str
    kind: str  # "store" | "ckpt-0"
    config: ModelConfig
    mesh: MeshSpec | None
    rules: Any
    layers: tuple[int, ...]
    store_dtype: str
    store: Store | None = None  # opened once, loaded from for every mesh


def _source(path: str | os.PathLike[str], config: ModelConfig | str | None) -> _Source:
    text = os.fspath(path)
    if source_kind(text) == STORE:
        store = Store(text)
        present = store.plan.layers if store.plan.layers is not None else tuple(range(store.config.num_layers))
        return _Source(text, "store", store.config, store.mesh, store.rules, present, store.plan.dtype, store)
    config = checkpoint_config(text, config)
    return _Source(text, "ckpt-0", config, None, GROK1_RULES, tuple(range(config.num_layers)), "keep")


def _mesh_spec(mesh: MeshSpec | str | None, source: _Source, devices: int) -> MeshSpec:
    if isinstance(mesh, str):
        mesh = _single(source) if mesh in ("1", "single") else as_mesh_spec(mesh)
    if mesh is None:
        mesh = source.mesh or default_mesh(devices)
    mesh = complete_mesh(mesh, source.rules)
    if mesh.size > devices:
        raise MeshError(f"mesh {mesh} needs {mesh.size} devices but {devices} are available; choose a smaller mesh "
                        f"with --mesh (see `grokweights plan --devices {devices}`), or on a machine without "
                        f"accelerators simulate CPU devices with --host-devices {mesh.size}",
                        expected=f"<= {devices}", actual=mesh.size)
    return mesh


def default_tokens(config: ModelConfig, length: int = 16) -> list[int]:
    """A fixed pseudo-random prompt of ``length`` ids in 1..vocab-1 (used when no prompt is given)."""
    return [int(t) for t in np.random.default_rng(1234).integers(1, config.vocab_size, length)]


def _tokens(config: ModelConfig, tokens: Any, prompt: str | None, tokenizer: Any, batch: int | None) -> np.ndarray:
    """The [B, T] ids to run: given ids, an encoded prompt, or the default prompt; rows cycled to ``batch``."""
    if tokens is not None and prompt is not None:
        raise UsageError("give token ids or a prompt, not both", actual="tokens and prompt")
    if prompt is not None and tokenizer is None:
        raise UsageError("a prompt needs a tokenizer (--tokenizer tokenizer.model); or give --tokens",
                         expected="tokenizer", actual=None)
    if tokens is not None:
        rows = [list(tokens)] if np.ndim(tokens) == 1 else [list(r) for r in tokens]
    elif tokenizer is not None:
        rows = [tokenizer.encode(prompt if prompt is not None else DEFAULT_PROMPT)]
    else:
        rows = [default_tokens(config)]
    if not rows or not rows[0] or len({len(r) for r in rows}) > 1:
        raise UsageError(f"token sequences must be non-empty and of one length, got lengths {[len(r) for r in rows]}",
                         actual=[len(r) for r in rows])
    if batch is not None:
        if batch < 1:
            raise UsageError(f"batch must be positive, got {batch}", actual=batch)
        rows = [rows[i % len(rows)] for i in range(batch)]
    return np.asarray(rows, dtype=np.int64)


def _load(source: _Source, spec: MeshSpec, layers: tuple[int, ...], rules: Any = None, *,
          axis_types: str = "auto") -> tuple[Any, float, int]:
    """Load ``layers`` of the source onto ``spec``: (params, seconds, bytes read)."""
    import jax

    from .load import LoadStats, load

    stats = LoadStats()
    started = time.perf_counter()
    params = load(source.store if source.store is not None else source.path, spec, rules=rules, layers=layers,
                  config=source.config, stats=stats, devices=jax.devices()[: spec.size], axis_types=axis_types)
    return params, time.perf_counter() - started, stats.bytes_read


def _param_bytes(params: Any) -> int:
    import jax

    return sum(int(leaf.nbytes) for leaf in jax.tree_util.tree_leaves(params))


def _timed_run(params: Any, ids: np.ndarray, config: ModelConfig, layers: tuple[int, ...], dtype: str
               ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Compile, run twice: (first logits, second logits, compile seconds, first run seconds)."""
    from ..model.transformer import prepare_forward

    program = prepare_forward(params, ids, config, layers=layers, dtype=dtype)
    started = time.perf_counter()
    run = program.compile()
    compiled = time.perf_counter()
    first = run()
    first.block_until_ready()
    ran = time.perf_counter()
    return np.asarray(first), np.asarray(run()), compiled - started, ran - compiled


def _top(logits: np.ndarray, tokenizer: Any) -> tuple[tuple[TopToken, ...], ...]:
    out = []
    for row in logits[:, -1, :]:
        ids = np.argsort(-row, kind="stable")[:TOP_K]
        out.append(tuple(TopToken(int(i), round(float(row[i]), 4), tokenizer.piece(int(i)) if tokenizer else None)
                         for i in ids))
    return tuple(out)


def _basic_checks(first: np.ndarray, second: np.ndarray, shape: tuple[int, ...]) -> list[Check]:
    finite = np.isfinite(first)
    return [
        Check("shape", first.shape == shape, f"logits {list(first.shape)}, expected {list(shape)}"),
        Check("finite", bool(finite.all()), "all logits finite" if finite.all()
              else f"{int((~finite).sum())} of {finite.size} logits are NaN or infinite"),
        Check("deterministic", bool(np.array_equal(first, second, equal_nan=True)),
              "two runs gave identical logits" if np.array_equal(first, second, equal_nan=True)
              else f"two runs differ by up to {float(np.nanmax(np.abs(first - second))):.3g}"),
    ]


def _mesh_check(source: _Source, other: MeshSpec, layers: tuple[int, ...], ids: np.ndarray, dtype: str,
                logits: np.ndarray, tolerance: float | None) -> Check:
    """Load the same layers onto ``other`` and compare its logits with ``logits``."""
    from ..model.transformer import forward

    params, _, _ = _load(source, other, layers)
    again = np.asarray(forward(params, ids, source.config, layers=layers, dtype=dtype))
    del params
    tol = tolerance if tolerance is not None else MESH_TOLERANCE[dtype] * max(1.0, float(np.abs(logits).max()))
    diff = float(np.max(np.abs(again - logits))) if np.isfinite(again).all() else float("inf")
    return Check("mesh", diff <= tol, f"max |difference| {diff:.3g} against mesh {other} (tolerance {tol:.3g})")


def _single(source: _Source) -> MeshSpec:
    names = source.mesh.names if source.mesh is not None else ("data", "model")
    return MeshSpec(tuple((name, 1) for name in names))


def _fingerprint_checks(fingerprint: Fingerprint, logits: np.ndarray, ids: np.ndarray, basic_ok: bool, *,
                        expect: Fingerprint | str | os.PathLike[str] | None,
                        save_expect: str | os.PathLike[str] | None) -> list[Check]:
    checks = []
    if expect is not None:
        expected = expect if isinstance(expect, Fingerprint) else Fingerprint.load(expect)
        problems = expected.check(logits, ids, layers=fingerprint.layers, dtype=fingerprint.dtype)
        where = "" if isinstance(expect, Fingerprint) else f" {os.fspath(expect)}"
        detail = (f"matches the fingerprint{where} (tolerance {expected.tolerance:g})" if not problems
                  else f"differs from the fingerprint{where}: " + "; ".join(problems[:4])
                  + (f"; and {len(problems) - 4} more" if len(problems) > 4 else ""))
        checks.append(Check("expect", not problems, detail))
    if save_expect is not None:
        if basic_ok:
            checks.append(Check("save-expect", True, f"fingerprint written to {fingerprint.save(save_expect)}"))
        else:
            checks.append(Check("save-expect", False, f"not written to {os.fspath(save_expect)}: the run failed"))
    return checks


def _prepare(store: str | os.PathLike[str], config: Any, mesh: Any, layers: Any, dtype: Any, tokenizer: Any,
             tokens: Any, prompt: str | None, batch: int | None
             ) -> tuple[str, _Source, MeshSpec, tuple[int, ...], Any, np.ndarray]:
    """What a smoke run (or its sizing) runs: dtype name, source, mesh, layers, tokenizer and token ids."""
    import jax

    from ..model.tokenizer import Tokenizer
    from ..model.transformer import dtype_name, normalize_layers

    name = dtype_name(dtype)
    source = _source(store, config)
    spec = _mesh_spec(mesh, source, jax.device_count())
    chosen = normalize_layers(layers, source.config) if layers is not None else source.layers
    tok = Tokenizer(tokenizer) if tokenizer is not None and not isinstance(tokenizer, Tokenizer) else tokenizer
    return name, source, spec, chosen, tok, _tokens(source.config, tokens, prompt, tok, batch)


def smoke(store: str | os.PathLike[str], *, mesh: MeshSpec | str | None = None, layers: Any = None,
          tokens: Any = None, prompt: str | None = None, tokenizer: Any = None, batch: int | None = None,
          dtype: str = "bfloat16", check_mesh: MeshSpec | str | None = None, tolerance: float | None = None,
          expect: Fingerprint | str | os.PathLike[str] | None = None,
          save_expect: str | os.PathLike[str] | None = None, config: ModelConfig | str | None = None,
          axis_types: str = "auto", force: bool = False) -> SmokeReport:
    """Load ``store`` onto this machine's devices, run the forward pass and check the logits.

    Args:
        store: a resharded store (or a folder holding ``ckpt-0/``, read directly).
        mesh: the mesh to load onto (``"data=2,model=4"``, ``"single"``); default: the store's mesh. Uses the
            first ``mesh.size`` devices of the default backend; axes the store's rules name but the mesh
            lacks get size 1 (``model=8`` is ``data=1,model=8`` under the release's rules).
        layers: decoder layers to run (``"0-1"`` or indices); default: every layer the store holds.
        tokens: token ids, one sequence or a list of equal-length sequences.
        prompt: text to encode with ``tokenizer`` instead of ``tokens``.
        tokenizer: a SentencePiece model path or a :class:`grokweights.model.tokenizer.Tokenizer`; also decodes the
            top tokens.
        batch: run this many sequences (the given ones, cycled); default: as many as given.
        dtype: compute dtype, ``bfloat16`` or ``float32``.
        check_mesh: also load onto this mesh (``"single"`` for one device) and compare the logits.
        tolerance: for ``check_mesh`` (default: ``MESH_TOLERANCE`` of the logits' scale) and for a saved
            fingerprint (default: :func:`grokweights.runtime.fingerprint.default_tolerance`).
        expect: a fingerprint (file or object) the logits must match.
        save_expect: write this run's fingerprint here (when the basic checks pass); refused before the run when
            it exists (unless ``force``), is not a regular file, or is in a checkpoint's folder.
        config: model config of a checkpoint folder without a manifest (a preset name or ModelConfig).
        axis_types: ``auto`` or ``explicit`` mesh axes (see :func:`grokweights.runtime.devices.jax_mesh`).
        force: let ``save_expect`` replace an existing fingerprint file.

    Returns:
        A :class:`SmokeReport`; ``report.ok`` is False when any check failed.

    Raises:
        UsageError, MeshError, StoreError, ConfigError: bad input (not failed checks).
    """
    import jax

    if tolerance is not None:
        tolerance = require_tolerance(tolerance, where="--tolerance")
    if expect is not None and not isinstance(expect, Fingerprint):
        Fingerprint.load(expect)  # a bad fingerprint is refused before the run
    if save_expect is not None:  # and a place the fingerprint may not be written
        from ..checkpoint.files import check_output

        check_output(save_expect, force=force, option="--save-expect", what="a fingerprint")
    dtype, source, spec, chosen, tok, ids = _prepare(store, config, mesh, layers, dtype, tokenizer, tokens, prompt,
                                                     batch)
    if tok is not None:
        tok.check_fits(source.config.vocab_size)
    params, load_seconds, load_bytes = _load(source, spec, chosen, axis_types=axis_types)
    logger.info("loaded %d bytes in %.2f s onto %s", load_bytes, load_seconds, spec)
    first, second, compile_seconds, run_seconds = _timed_run(params, ids, source.config, chosen, dtype)
    checks = _basic_checks(first, second, (*ids.shape, source.config.vocab_size))
    basic_ok = all(c.ok for c in checks)
    if check_mesh is not None:
        other = _mesh_spec(check_mesh, source, jax.device_count())
        checks.append(_mesh_check(source, other, chosen, ids, dtype, first, tolerance))
    fingerprint = Fingerprint.of(first, ids, layers=chosen, dtype=dtype, mesh=str(spec), tolerance=tolerance)
    checks += _fingerprint_checks(fingerprint, first, ids, basic_ok, expect=expect, save_expect=save_expect)
    devices = tuple(f"{d.platform}:{d.id}" for d in jax.devices()[: spec.size])
    return SmokeReport(
        store=source.path, source=source.kind, mesh=str(spec), devices=devices, layers=chosen, dtype=dtype,
        tokens=tuple(tuple(int(t) for t in row) for row in ids), load_seconds=load_seconds, load_bytes=load_bytes,
        param_bytes=_param_bytes(params), compile_seconds=compile_seconds, run_seconds=run_seconds,
        top=_top(first, tok), checks=tuple(checks), fingerprint=fingerprint, config=source.config)


def _memory() -> tuple[int | None, int | None, bool]:
    """(bytes per device if the backend says, host bytes, whether devices are host CPUs)."""
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return stats.get("bytes_limit"), host, device.platform == "cpu"


def smoke_plan(store: str | os.PathLike[str], *, mesh: MeshSpec | str | None = None, layers: Any = None,
               tokens: Any = None, prompt: str | None = None, tokenizer: Any = None, batch: int | None = None,
               dtype: str = "bfloat16", config: ModelConfig | str | None = None, device_memory: int | None = None,
               host_memory: int | None = None) -> MachinePlan:
    """Size the run :func:`smoke` would do on this machine, without loading anything.

    Arguments as for :func:`smoke`; ``device_memory`` / ``host_memory`` (bytes) override what the backend and
    the OS report.
    """
    import jax

    from ..sharding.sizing import plan_memory

    dtype, source, spec, chosen, _, ids = _prepare(store, config, mesh, layers, dtype, tokenizer, tokens, prompt,
                                                   batch)
    found_device, found_host, on_cpu = _memory()
    host = host_memory if host_memory is not None else found_host
    if device_memory is None:  # CPU devices share the host's memory
        device_memory = found_device if found_device is not None or not on_cpu or host is None else host // spec.size
    return plan_memory(source.config, spec, rules=source.rules, layers=chosen, batch=ids.shape[0],
                       length=ids.shape[1], dtype=dtype, store_dtype=source.store_dtype, devices=jax.device_count(),
                       device_memory=device_memory, host_memory=host, shared_host=on_cpu)
