"""The ``reshard`` command: verify an official checkpoint, then write a tensorstore store for a mesh."""

from __future__ import annotations

from pathlib import Path

import click

from .. import _progress
from ._common import config_options, emit_json, human_bytes, json_option, quiet_option, resolve_config, table


def _render_plan(plan, dst: str) -> None:
    rows = []
    for a in plan.arrays:
        chunks = 1
        for n, c in zip(a.shape, a.chunk_shape, strict=True):
            chunks *= -(-n // c)
        rows.append([a.store_path, "x".join(map(str, a.shape)), a.dtype, _spec_text(a.partition_spec),
                     "x".join(map(str, a.chunk_shape)), chunks, human_bytes(plan.shard_bytes(a))])
    click.echo(table(rows, ["array", "shape", "dtype", "partition", "chunk", "chunks", "per device"]))
    per_device = plan.bytes_per_device
    click.echo(f"\nmesh {plan.mesh} ({plan.mesh.size} devices), rules {plan.rules.name}, dtype {plan.dtype}, "
               f"compression {plan.compression}\n{len(plan.arrays)} arrays, output {human_bytes(plan.total_bytes)} "
               f"before compression -> {dst}\neach device reads {human_bytes(per_device[0])} "
               f"({per_device[0]} bytes; {len(per_device)} devices)")


def _spec_text(spec) -> str:
    parts = ["*".join(e) if isinstance(e, tuple) else (e or "-") for e in spec]
    return "(" + ",".join(parts) + ")"


@click.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst")
@click.option("--mesh", "mesh_text", required=True, help="Target mesh as NAME=SIZE pairs, e.g. data=1,model=8 or "
              "expert=8,model=1.")
@click.option("--rules", default="grok1", show_default=True,
              help="Partition rules: grok1 (the release's), expert (expert-parallel MoE) or a JSON rules file.")
@click.option("--dtype", type=click.Choice(["keep", "bfloat16"]), default="keep", show_default=True,
              help="keep: int8 weights + scales as released; bfloat16: store dequantised weights.")
@click.option("--compression", default="none", show_default=True, help="Chunk codec: none, zstd or zstd:LEVEL.")
@click.option("--jobs", type=click.IntRange(min=1), help="Concurrent chunk copies and file writes (default: CPUs).")
@click.option("--layers", help="Decoder layers to keep, e.g. 0-7 or 0,2,5 (embedding and final norm always kept).")
@click.option("--manifest", "manifest_ref", help="Manifest file or shipped name to verify SRC against (default: "
              "the one beside ckpt-0/); it also supplies the model config.")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Verify SRC against the manifest first.")
@click.option("--sync/--no-sync", default=True, show_default=True,
              help="Flush each array's chunks to disk (syncfs) before publishing it.")
@click.option("--dry-run", is_flag=True, help="Print the plan (arrays, chunking, bytes per device) and write nothing.")
@click.option("--follow", is_flag=True, help="Convert the shards of SRC as they arrive (hf download, rsync, a network "
              "file system): each once its size is final and its sha256 matches; ends when all are converted.")
@click.option("--settle", type=click.FloatRange(min=0), default=2.0, show_default=True, metavar="SECONDS",
              help="With --follow: how long a shard's size and mtime must stay unchanged before it is read.")
@click.option("--timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help="With --follow: give up after this long without a new complete shard (default: wait).")
@config_options
@json_option
@quiet_option
def reshard(src: Path, dst: str, mesh_text: str, rules: str, dtype: str, compression: str, jobs: int | None,
            layers: str | None, manifest_ref: str | None, verify: bool, sync: bool, dry_run: bool, follow: bool,
            settle: float, timeout: float | None, preset_name: str | None, config_file: Path | None, as_json: bool,
            quiet: bool) -> None:
    """Reshard the official checkpoint SRC into a tensorstore store DST laid out for a mesh.

    DST is a local path or a tensorstore URL (memory://, gs://bucket/path, s3://bucket/path). A rerun
    skips arrays already complete; the store index grokweights.json is written last.
    """
    from ..store.reshard import reshard as run

    if follow:
        from ._stream import follow as follow_run

        return follow_run(src, dst, mesh=mesh_text, rules=rules, dtype=dtype, compression=compression, jobs=jobs,
                          layers=layers, manifest=manifest_ref, sync=sync, poll=min(1.0, settle or 1.0),
                          settle=settle, timeout=timeout, as_json=as_json, quiet=quiet)
    config = resolve_config(preset_name, config_file)
    with _progress.bar(None, desc="reshard", quiet=quiet or dry_run) as bar:
        report = run(src, dst, mesh_text, rules=rules, dtype=dtype, compression=compression, jobs=jobs,
                     layers=layers, manifest=manifest_ref, verify=verify, config=config, dry_run=dry_run,
                     sync=sync, progress=bar.update)
    if as_json:
        emit_json(report.to_dict())
    elif dry_run:
        _render_plan(report.plan, dst)
    else:
        rate = report.bytes_written / report.seconds / 1e9 if report.seconds else 0.0
        click.echo(f"wrote {len(report.written)} arrays ({human_bytes(report.bytes_written)}) in "
                   f"{report.seconds:.1f}s ({rate:.2f} GB/s); {len(report.skipped)} already complete; store: {dst}")
