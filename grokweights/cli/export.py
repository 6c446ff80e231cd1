"""The ``export`` command: the checkpoint (or a store) as GGUF (llama.cpp) or safetensors (SGLang, vLLM)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import _progress
from ._common import config_options, emit_json, human_bytes, json_option, quiet_option, resolve_config


@click.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True, help="gguf (llama.cpp, architecture grok), sglang (SGLang's "
              "Grok1ForCausalLM) or hf (hpcai-tech names, as vLLM's Grok1ModelForCausalLM loads them).")
@click.option("--dtype", default="bf16", show_default=True,
              help="Weights as bf16, f16, f32; for gguf also q8_0 or a llama.cpp quantisation (q4_k_m, q5_k_m, "
              "q6_k, q2_k, q3_k_s|m|l, q4_k_s, q5_k_s, q4_0, q4_1, q5_0, q5_1: llama.cpp's own quantizer and "
              "per-tensor types, needs llama-cpp-python); for sglang/hf also int8 (the release's int8 and scales as "
              "compressed-tensors pack-quantized, lossless). Norms and router stay f32.")
@click.option("--layers", help="Decoder layers to export, e.g. 0-7 or 0,2,5 (renumbered from 0).")
@click.option("--shard-size", help="Largest output file, e.g. 5G or 500MiB (safetensors default 5G; a GGUF is "
              "split the llama.cpp way, NAME-00001-of-0000N.gguf, only when given).")
@click.option("--tokenizer", type=click.Path(path_type=Path),
              help="SentencePiece tokenizer.model: the GGUF vocabulary (else a placeholder vocabulary that runs "
              "on token ids); copied beside safetensors.")
@click.option("--manifest", "manifest_ref", help="Manifest file or shipped name to verify SRC against (default: "
              "the one beside ckpt-0/).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Verify SRC against the manifest first (sizes, sha256, the torrent's pieces, the download's "
              "completion record), as reshard does.")
@click.option("--hf-code", default="hub", show_default=True,
              help="For --format hf, the model code config.json's auto_map names: hub (hpcai-tech/grok-1's, "
              "downloaded by transformers), local (grokweights' own, copied beside: from_pretrained works offline) "
              "or a folder holding hpcai-tech's configuration_grok1.py and modeling_grok1.py (copied beside).")
@click.option("--force", is_flag=True, help="Replace an existing export at DST (never anything else).")
@click.option("--dry-run", is_flag=True, help="Print the tensor table (name, shape, dtype, bytes) and write nothing.")
@config_options
@json_option
@quiet_option
def export(src: Path, dst: Path, fmt: str, dtype: str, layers: str | None, shard_size: str | None,
           tokenizer: Path | None, manifest_ref: str | None, verify: bool, hf_code: str, force: bool, dry_run: bool,
           preset_name: str | None, config_file: Path | None, as_json: bool, quiet: bool) -> None:
    """Export the official checkpoint SRC (or a store that reshard or fetch --reshard wrote) to DST for another
    engine, one tensor at a time; from a store the bytes are those its ckpt-0/ exports.

    DST is a .gguf file for --format gguf and a folder (safetensors, index, config.json) otherwise. A ckpt-0
    SRC is verified first and each shard's header checked against the layout. Files are written under a hidden
    .DST.partial name and renamed when complete; a rerun after an interruption starts over. docs/export.md
    lists every name map and how each engine's forward differs from Grok-1.
    """
    from ..engines import export as run

    config = resolve_config(preset_name, config_file)
    report = run(src, dst, format=fmt, dtype=dtype, layers=layers, shard_size=shard_size, tokenizer=tokenizer,
                 force=force, dry_run=True, config=config, manifest=manifest_ref, verify=verify, hf_code=hf_code)
    if dry_run:
        if as_json:
            emit_json({**report.to_dict(), "table": [dict(t.__dict__, bytes=t.nbytes) for t in report.tensors]})
        else:
            click.echo(report.table)
        return
    with _progress.bar(report.bytes, desc="export", quiet=quiet) as bar:
        report = run(src, dst, format=fmt, dtype=dtype, layers=layers, shard_size=shard_size, tokenizer=tokenizer,
                     force=force, config=config, manifest=manifest_ref, verify=verify, hf_code=hf_code,
                     on_tensor=lambda t: bar.update(t.nbytes))
    unproven = (report.verified or {}).get("unverified")
    if unproven:
        click.echo(f"warning: {unproven}", err=True)
    if as_json:
        emit_json(report.to_dict())
    else:
        rate = report.bytes / report.seconds / 1e9 if report.seconds else 0.0
        click.echo(f"wrote {len(report.tensors)} tensors ({human_bytes(report.bytes)}) in {report.seconds:.1f}s "
                   f"({rate:.2f} GB/s): {', '.join(report.files)}")
