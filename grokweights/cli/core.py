"""Commands of the format core: ``synth``, ``inspect``, ``manifest create|pin|show``, ``verify``."""

from __future__ import annotations

from pathlib import Path

import click

from .. import _progress
from ..checkpoint.config import preset as get_preset
from ..checkpoint.layout import layout
from ..constants import LOCAL_MANIFEST_NAME
from ._common import config_options, emit_json, human_bytes, json_option, quiet_option, resolve_config, table


@click.command()
@click.option("--preset", "preset_name", type=click.Choice(["tiny", "grok-1"]), default="tiny", show_default=True,
              help="Model whose layout to synthesize.")
@click.option("--layers", type=click.IntRange(min=1), help="Only the first N layers, at full width.")
@click.option("--seed", type=int, default=0, show_default=True, help="Values are a pure function of the seed.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write ckpt-0/ into.")
@click.option("--manifest/--no-manifest", "write_manifest", default=True, show_default=True,
              help=f"Also hash it into {LOCAL_MANIFEST_NAME} beside ckpt-0/.")
@quiet_option
def synth(preset_name: str, layers: int | None, seed: int, out_dir: Path, write_manifest: bool, quiet: bool) -> None:
    """Write a synthetic checkpoint in the exact official format."""
    from ..checkpoint.manifest_ops import create_manifest
    from ..checkpoint.synth import synthesize

    config = get_preset(preset_name, layers=layers)
    total = sum(s.expected_file_size for s in layout(config))
    with _progress.bar(total, desc="synth", quiet=quiet) as bar:
        ckpt = synthesize(out_dir, config, seed=seed, progress=bar.update)
    click.echo(f"wrote {len(layout(config))} shards ({human_bytes(total)}) to {ckpt}")
    if write_manifest:
        with _progress.bar(total, desc="sha256", quiet=quiet) as bar:
            manifest = create_manifest(out_dir, name=f"synthetic-{preset_name}-seed{seed}", config=config,
                                       progress=bar.update)
        click.echo(f"manifest: {manifest.save(Path(out_dir) / LOCAL_MANIFEST_NAME)}")


@click.command("inspect")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_options
@json_option
def inspect_command(checkpoint: Path, preset_name: str | None, config_file: Path | None, as_json: bool) -> None:
    """Show every shard's header and check it against the layout (headers only; fast on any size).

    Exit status 1 when any file disagrees with the layout or cannot be parsed safely.
    """
    from ..checkpoint.inspection import inspect_checkpoint

    config = resolve_config(preset_name, config_file)
    report = inspect_checkpoint(checkpoint, config=config, config_source="--preset/--config")
    if as_json:
        emit_json(report.to_dict())
    else:
        rows = []
        for f in report.files:
            d = f.to_dict()
            rows.append([d.get("index", "?"), f.file, d.get("path", "?"), d.get("kind", "?"), d.get("shape", "?"),
                         d.get("dtype", "?"), d.get("scales_shape", ""), f.size, "ok" if not f.problems else "BAD"])
        click.echo(table(rows, ["#", "file", "module", "kind", "shape", "dtype", "scales", "bytes", "check"]))
        click.echo(f"\nconfig: {report.config_source}; {len(report.files)} files, {human_bytes(report.total_bytes)}")
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
        click.echo("layout: ok" if report.ok else f"layout: {len(report.problems)} problem(s)")
    raise SystemExit(0 if report.ok else 1)


@click.group()
def manifest() -> None:
    """Create, pin and show checkpoint manifests."""


@manifest.command("create")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest file to write.")
@click.option("--name", help="Name recorded in the manifest (default: the folder's name).")
@config_options
@click.option("--jobs", type=click.IntRange(min=1), help="Files hashed in parallel (default: CPUs).")
@quiet_option
def manifest_create(checkpoint: Path, output: Path, name: str | None, preset_name: str | None,
                    config_file: Path | None, jobs: int | None, quiet: bool) -> None:
    """Hash a local checkpoint into a manifest (sizes, sha256, model config)."""
    from ..checkpoint.manifest_ops import create_manifest
    from ..checkpoint.paths import checkpoint_bytes

    config = resolve_config(preset_name, config_file)
    total = checkpoint_bytes(checkpoint)
    with _progress.bar(total, desc="sha256", quiet=quiet) as bar:
        result = create_manifest(checkpoint, name=name, config=config, jobs=jobs, progress=bar.update)
    result.save(output)
    click.echo(f"{output}: {len(result.shards)} shards, {human_bytes(result.total_size)}, "
               f"{result.config.num_layers} layers")


@manifest.command("pin")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--manifest", "manifest_file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Manifest whose missing sha256 values to fill.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the pinned manifest here (default: update the manifest in place).")
@click.option("--jobs", type=click.IntRange(min=1), help="Files hashed in parallel (default: CPUs).")
@quiet_option
def manifest_pin(checkpoint: Path, manifest_file: Path, output: Path | None, jobs: int | None, quiet: bool) -> None:
    """Fill missing sha256 values from a copy you trust; never changes a recorded hash."""
    from ..checkpoint.manifest import load_manifest
    from ..checkpoint.manifest_ops import pin_manifest

    before = load_manifest(manifest_file)
    with _progress.bar(before.total_size, desc="sha256", quiet=quiet) as bar:
        pinned = pin_manifest(checkpoint, manifest_file, output=output, jobs=jobs, progress=bar.update)
    added = pinned.hashed - before.hashed
    click.echo(f"{pinned.origin}: {added} hash(es) added, {pinned.hashed}/{len(pinned.shards)} shards pinned")


@manifest.command("show")
@click.argument("name_or_file")
@json_option
def manifest_show(name_or_file: str, as_json: bool) -> None:
    """Summarise a manifest (a shipped name such as grok-1, or a file)."""
    from ..checkpoint.manifest import load_manifest

    m = load_manifest(name_or_file)
    if as_json:
        emit_json(m.to_dict())
        return
    click.echo(f"name:    {m.name}\nfile:    {m.origin}\nshards:  {len(m.shards)} ({human_bytes(m.total_size)}, "
               f"{m.total_size} bytes)\nsha256:  {m.hashed}/{len(m.shards)} known\nlayers:  {m.config.num_layers}")
    for key, value in m.sources.to_dict().items():
        if value:
            click.echo(f"{key + ':':<13}{value}")
    if m.notes:
        click.echo(f"notes:   {m.notes}")


@click.command("verify")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--manifest", "manifest_ref", help=f"Manifest file or shipped name (grok-1); default: "
              f"{LOCAL_MANIFEST_NAME} beside ckpt-0/.")
@click.option("--jobs", type=click.IntRange(min=1), help="Files hashed in parallel (default: CPUs).")
@click.option("--fast", is_flag=True, help="Existence and sizes only; no sha256.")
@click.option("--deep", is_flag=True, help="Also check each shard's header against its tensor spec.")
@click.option("--strict", is_flag=True, help="Fail (exit 1) when a shard could not be hashed-verified.")
@json_option
@quiet_option
def verify_command(checkpoint: Path, manifest_ref: str | None, jobs: int | None, fast: bool, deep: bool,
                   strict: bool, as_json: bool, quiet: bool) -> None:
    """Check every shard against a manifest: missing, extra, size, sha256 (and headers with --deep).

    Exit status 0 when everything matches, 1 when anything does not, 2 for usage errors.
    """
    from ..checkpoint.manifest import find_local_manifest, load_manifest
    from ..checkpoint.verify import verify
    from ..errors import UsageError

    m = load_manifest(manifest_ref) if manifest_ref else find_local_manifest(checkpoint)
    if m is None:
        raise UsageError(f"{checkpoint}: no {LOCAL_MANIFEST_NAME} beside ckpt-0/; pass --manifest FILE|grok-1")
    total = 0 if fast else sum(s.size for s in m.shards if s.sha256)
    with _progress.bar(total, desc="verify", quiet=quiet) as bar:
        report = verify(checkpoint, m, jobs=jobs, fast=fast, deep=deep, progress=bar.update)
    ok = report.strict_ok if strict else report.ok
    if as_json:
        emit_json(report.to_dict())
    else:
        _render_verify(report)
    raise SystemExit(0 if ok else 1)


def _render_verify(report) -> None:
    bad = report.failures
    if bad:
        click.echo(table([[r.path, r.status, r.expected if r.expected is not None else "",
                           r.actual if r.actual is not None else "", r.detail] for r in bad],
                         ["shard", "problem", "expected", "actual", "detail"]))
        click.echo("")
    counts = report.counts()
    rate = report.bytes_hashed / report.seconds / 1e9 if report.seconds else 0
    click.echo(table([[k, v] for k, v in sorted(counts.items())], ["status", "shards"]))
    click.echo(f"\nmanifest {report.manifest}\nhashed {human_bytes(report.bytes_hashed)} in {report.seconds:.2f}s "
               f"({rate:.2f} GB/s, {report.jobs} jobs)")
    if report.unverified:
        click.echo(f"{len(report.unverified)} shard(s) unverified: sizes match but no sha256 was checked "
                   "(pin hashes with `grokweights manifest pin`)")
    if bad:
        click.echo(f"FAILED: {len(bad)} shard(s) do not match; re-run `grokweights fetch` to repair them")
    else:
        click.echo("OK")
