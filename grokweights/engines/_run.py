"""``export``: checks up front, one tensor at a time into a hidden staging folder, then rename into place.

Everything that can be refused is refused before a byte is written: the format and dtype, the layer range,
a destination that is not the export's or exists (unless ``force``, see ``_destination``), shards whose
headers disagree with the layout, a tokenizer that is not one, a source that fails verification (see
``_guard``), another export of the same destination, and a disk without room for the planned bytes. Files
are written under ``.DST.partial/`` beside the destination; only complete files are renamed to their
final names (for a split GGUF the first split, which carries the metadata llama.cpp opens, comes last).
A failed export removes the staging folder; a killed one leaves it, and the next run starts over.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._sizes import parse_size
from .._space import require_space
from ..checkpoint.config import ModelConfig
from ..checkpoint.layout import layer_indices
from ..errors import GrokWeightsError, UsageError
from ._destination import (
    check_existing,
    check_place,
    clear_leftovers,
    export_lock,
    mark_publishing,
    remove,
    staging_path,
    write_error,
)
from ._guard import check_shards, read_tokenizer, source_specs, verify_source
from ._hfcode import copy_hf_code, resolve_hf_code
from ._kquant import FTYPES
from ._plan import plan_tensors, render_table
from ._source import CheckpointSource
from ._storesource import StoreSource, is_store, open_source
from ._tensor import OutTensor

__all__ = ["export", "ExportReport", "parse_size"]

#: default largest file: 5 GB for safetensors (the Hugging Face convention); GGUF is one file unless asked.
DEFAULT_SHARD_BYTES = {"gguf": 0, "sglang": 5 * 10**9, "hf": 5 * 10**9}
#: room kept for headers, vocabulary and config files when checking free space.
_METADATA_MARGIN = 64 * 2**20

@dataclass
class ExportReport:
    """What an export wrote (or, for a dry run, would write)."""

    format: str
    dtype: str
    destination: str
    layers: list[int]
    tensors: list[OutTensor] = field(repr=False)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False
    verified: dict[str, Any] | None = None

    @property
    def bytes(self) -> int:
        """Bytes of tensor data."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def table(self) -> str:
        """The tensor table (``--dry-run``)."""
        return render_table(self.tensors)

    def to_dict(self) -> dict:
        return {"format": self.format, "dtype": self.dtype, "destination": self.destination, "layers": self.layers,
                "tensors": len(self.tensors), "bytes": self.bytes, "files": self.files,
                "seconds": round(self.seconds, 3), "dry_run": self.dry_run,
                "verified": self.verified}


def _publish(fmt: str, staging: Path, dst: Path, files: list[Path], existing: list[Path]) -> list[Path]:
    """Move the complete files from the staging folder to their final names; returns the final paths."""
    remove(existing)
    if fmt != "gguf":
        os.replace(staging, dst)
        return [dst / f.name for f in files]
    finals = [dst.parent / f.name for f in files]
    mark_publishing(staging, finals)  # a kill from here on: the rerun removes the parts already renamed
    for f, final in list(zip(files, finals))[1:] + list(zip(files, finals))[:1]:  # first split (metadata) last
        os.replace(f, final)
    remove([staging])
    return finals


def _write(fmt: str, staging: Path, dst: Path, tensors: list[OutTensor], source: CheckpointSource | StoreSource,
           config: ModelConfig, dtype: str, layers: int, max_bytes: int, tokenizer, on_tensor,
           code: Path | None = None) -> list[Path]:
    if fmt == "gguf":
        from ._gguf import write_gguf
        from ._vocab import placeholder_vocab, sentencepiece_vocab

        vocab = (sentencepiece_vocab(tokenizer, config.vocab_size) if tokenizer is not None
                 else placeholder_vocab(config.vocab_size))  # tokenizer: the checked bytes
        return write_gguf(staging / dst.name, tensors, source.blocks, config=config, layers=layers, dtype=dtype,
                          vocab=vocab, max_bytes=max_bytes, on_tensor=on_tensor)
    from ._hfconfig import config_json
    from ._safetensors import write_safetensors

    files = write_safetensors(staging, tensors, source.blocks, max_bytes, on_tensor)
    if code is not None:
        files += copy_hf_code(code, staging)
    (staging / "config.json").write_text(json.dumps(config_json(fmt, config, layers, dtype, code is not None),
                                                    indent=2) + "\n")
    if tokenizer is not None:
        (staging / "tokenizer.model").write_bytes(tokenizer)
    return files + [staging / "config.json"] + ([staging / "tokenizer.model"] if tokenizer is not None else [])


def export(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, format: str, dtype: str = "bf16",
           layers: Iterable[int] | str | None = None, shard_size: str | int | None = None,
           tokenizer: str | os.PathLike[str] | None = None, force: bool = False, dry_run: bool = False,
           config: ModelConfig | str | None = None, manifest: Any = None, verify: bool = True,
           hf_code: str | os.PathLike[str] | None = None,
           on_tensor: Callable[[OutTensor], None] | None = None) -> ExportReport:
    """Export a checkpoint or a store to GGUF (llama.cpp) or safetensors (SGLang, vLLM/hpcai-tech names).

    Args:
        src: the folder holding ``ckpt-0/`` (or ``ckpt-0/`` itself), or a store written by ``reshard`` /
            ``fetch --reshard`` (the same bytes as exporting the ``ckpt-0/`` it came from).
        dst: the ``.gguf`` file (``gguf``) or the output folder (``sglang``, ``hf``).
        format: ``gguf``, ``sglang`` or ``hf``.
        dtype: ``bf16`` (default), ``f16``, ``f32``, or ``q8_0`` (gguf only); norms and router stay f32.
        layers: checkpoint layers to export (``"0-3"``, indices; all when None), renumbered from 0.
        shard_size: largest output file (``"5G"``); gguf splits the llama.cpp way only when given.
        tokenizer: SentencePiece ``tokenizer.model`` (gguf: the vocabulary; safetensors: copied beside).
        force: replace an existing export at the destination (never anything else).
        dry_run: plan only; the report's ``table`` lists every tensor.
        config: the model config (a preset name or ModelConfig); else the manifest's, recorded or inferred (a
            store's own).
        manifest: a Manifest, manifest file or shipped name to verify a ``ckpt-0`` source against; default: the
            one beside ``ckpt-0/`` (a store is verified with ``grokweights verify STORE``).
        verify: verify a ``ckpt-0`` source against the manifest first (as ``reshard`` does).
        hf_code: for ``hf``, the model code ``config.json``'s ``auto_map`` names: ``hub`` (default: hpcai-tech's
            on the model hub), ``local`` (grokweights' own, copied beside: loads offline) or a folder holding
            hpcai-tech's ``configuration_grok1.py`` and ``modeling_grok1.py`` (copied beside).
        on_tensor: called after each tensor is written.

    Raises:
        UsageError: bad format, dtype, layer range or size; a destination that exists (without ``force``) or
            is not the export's to write; a tokenizer that is not a SentencePiece model.
        LayoutMismatchError: a shard's header disagrees with the layout (shape, dtype).
        VerificationError: no manifest (without ``verify=False``), or a shard failed verification.
        GrokWeightsError: another export is writing the destination; a write failed (the partial output is
            removed); InsufficientSpaceError when the disk is, or becomes, too full.
    """
    started = time.monotonic()
    store = is_store(src)
    if store and manifest is not None:
        raise UsageError(f"{os.fspath(src)}: is a store; --manifest verifies a ckpt-0 source (verify a store with "
                         "`grokweights verify STORE`)", path=src, expected="a ckpt-0 source", actual="a store")
    found = None if store or not (manifest is not None or (verify and not dry_run)) else _manifest(src, manifest)
    source, cfg = open_source(src, config if config is not None or found is None else found.config)
    if isinstance(source, StoreSource):
        chosen = layer_indices(layers, num_layers=cfg.num_layers) if layers is not None else source.layers
        source.require_layers(chosen)
        if dtype == "int8" and not source.holds_int8:
            raise UsageError(f"{src}: the store holds bfloat16 weights (reshard --dtype bfloat16), not the release's "
                             "int8; export int8 from ckpt-0/ or from a store that keeps int8", path=src,
                             expected="int8 weights and scales", actual="bfloat16")
    else:
        chosen = layer_indices(layers, num_layers=cfg.num_layers)
    tensors = plan_tensors(cfg, format, dtype, chosen)
    code = resolve_hf_code(hf_code, format)
    if dtype in FTYPES:  # the per-tensor types are llama.cpp's own choice
        from ._gguf import metadata_writer
        from ._kquant import choose_types
        from ._vocab import placeholder_vocab

        tensors = choose_types(tensors, dtype, metadata_writer(cfg, len(chosen), dtype,
                                                               placeholder_vocab(cfg.vocab_size)))
    max_bytes = parse_size(shard_size) if shard_size is not None else DEFAULT_SHARD_BYTES[format]
    text, dst = os.fspath(dst), Path(dst)
    report = ExportReport(format, dtype, text, list(chosen), tensors, dry_run=dry_run)
    if dry_run:
        return report
    ckpt = None if isinstance(source, StoreSource) else source.ckpt
    check_place(src, ckpt, dst, text)
    check_existing(format, dst, text, force)  # refusals before anything is created
    specs = source_specs(cfg, {t.source for t in tensors})
    if ckpt is not None:
        check_shards(ckpt, specs)
    model = read_tokenizer(tokenizer, cfg.vocab_size) if tokenizer is not None else None
    with export_lock(dst):
        report.verified = verify_source(ckpt, found, specs) if verify and ckpt is not None else None
        clear_leftovers(dst)  # an interrupted run's: start over
        existing = check_existing(format, dst, text, force)
        require_space(dst.parent, report.bytes + _METADATA_MARGIN, what=f"to export {len(tensors)} tensors",
                      hint="choose another destination, fewer --layers or a smaller --dtype")
        staging = staging_path(dst)
        try:
            staging.mkdir()
            files = _write(format, staging, dst, tensors, source, cfg, dtype, len(chosen), max_bytes or 0, model,
                           on_tensor, code)
            report.files = [os.fspath(p) for p in _publish(format, staging, dst, files, existing)]
        except BaseException as exc:
            clear_leftovers(dst)
            if isinstance(exc, OSError) and not isinstance(exc, GrokWeightsError):
                raise write_error(exc, dst) from None
            raise
    report.seconds = time.monotonic() - started
    return report


def _manifest(src: str | os.PathLike[str], manifest: Any) -> Any:
    from ..checkpoint.manifest import Manifest, find_local_manifest, load_manifest

    if manifest is None:
        return find_local_manifest(src)
    return manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
