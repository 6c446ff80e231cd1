"""Commands of the format core: ``synth``, ``inspect``, ``manifest create|pin|show``, ``verify``."""

from __future__ import annotations

from pathlib import Path

import click

from .. import _progress
from ..checkpoint.config import preset as get_preset
from ..constants import LOCAL_MANIFEST_NAME
from ._common import config_options, emit_json, human_bytes, json_option, quiet_option, resolve_config, table


@click.command()
@click.option("--preset", "preset_name", type=click.Choice(["tiny", "grok-1"]), default="tiny", show_default=True,
              help="Model whose layout to synthesize.")
@click.option("--layers", type=click.IntRange(min=1), help="Only the first N layers, at full width.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Values are a pure function of the seed (a non-negative integer).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write ckpt-0/ into.")
@click.option("--manifest/--no-manifest", "write_manifest", default=True, show_default=True,
              help=f"Also hash it into {LOCAL_MANIFEST_NAME} beside ckpt-0/.")
@click.option("--force", is_flag=True, help="Replace a checkpoint already in --out (refused otherwise).")
@quiet_option
def synth(preset_name: str, layers: int | None, seed: int, out_dir: str, write_manifest: bool, force: bool,
          quiet: bool) -> None:
    """Write a synthetic checkpoint in the exact official format.

    Refuses a non-empty OUT/ckpt-0 without --force, an empty OUT or one inside a checkpoint's folder, and a
    disk without room, before writing anything.
    """
    from ..checkpoint.layout import layout
    from ..checkpoint.manifest_ops import create_manifest
    from ..checkpoint.synth import synthesize

    config = get_preset(preset_name, layers=layers)
    total = sum(s.expected_file_size for s in layout(config))
    with _progress.bar(total, desc="synth", quiet=quiet) as bar:
        ckpt = synthesize(out_dir, config, seed=seed, force=force, progress=bar.update)
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
@click.option("--force", is_flag=True, help="Overwrite an existing output file (never a checkpoint's shard).")
@quiet_option
def manifest_create(checkpoint: Path, output: Path, name: str | None, preset_name: str | None,
                    config_file: Path | None, jobs: int | None, force: bool, quiet: bool) -> None:
    """Hash a local checkpoint into a manifest (sizes, sha256, model config)."""
    from ..checkpoint.manifest_ops import check_output, create_manifest
    from ..checkpoint.paths import checkpoint_bytes

    check_output(output, force=force)
    config = resolve_config(preset_name, config_file)
    total = checkpoint_bytes(checkpoint)
    with _progress.bar(total, desc="sha256", quiet=quiet) as bar:
        result = create_manifest(checkpoint, name=name, config=config, jobs=jobs, progress=bar.update)
    result.save(output)
    click.echo(f"{output}: {len(result.shards)} shards, {human_bytes(result.total_size)}, "
               f"{result.config.num_layers} layers")


@manifest.command("pin")
@click.argument("checkpoint", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--manifest", "manifest_ref", required=True, metavar="FILE|NAME",
              help="Manifest (file, or shipped name with -o) whose missing sha256 values to fill.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the pinned manifest here (default: update the manifest in place).")
@click.option("--from-torrent", "torrent", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Pin each shard whose v1 pieces pass against this .torrent (its infohash must be the "
                   "manifest's), sha256 taken in the same read; provenance torrent:<infohash>.")
@click.option("--from-hub", "hub_repo", metavar="REPO",
              help="Pin from the model hub's LFS sha256 of REPO (e.g. xai-org/grok-1; needs the 'hub' extra; "
                   "endpoint: HF_ENDPOINT); provenance hub:<repo>@<commit>. Needs no CHECKPOINT.")
@click.option("--revision", help="Hub branch, tag or commit (default: main).")
@click.option("--jobs", type=click.IntRange(min=1), help="Files hashed in parallel (default: CPUs).")
@quiet_option
def manifest_pin(checkpoint: Path | None, manifest_ref: str, output: Path | None, torrent: Path | None,
                 hub_repo: str | None, revision: str | None, jobs: int | None, quiet: bool) -> None:
    """Fill missing sha256 values from a trusted copy, the release torrent, or the hub.

    A recorded hash is never changed: a source that disagrees is refused, naming both. With
    --from-torrent, shards that fail are listed and not pinned (exit 1).
    """
    from ..checkpoint.manifest import load_manifest
    from ..checkpoint.manifest_ops import pin_manifest
    from ..errors import UsageError

    before = load_manifest(manifest_ref)
    if output is None and not Path(manifest_ref).is_file():
        raise UsageError(f"manifest pin: {manifest_ref} is a shipped manifest; write the pinned copy with -o FILE")
    target = output or Path(before.origin)
    if checkpoint is None and (torrent is not None or hub_repo is None):
        raise UsageError("manifest pin: give the CHECKPOINT folder (only --from-hub alone needs none)")
    if torrent is None and hub_repo is None:
        with _progress.bar(before.total_size, desc="sha256", quiet=quiet) as bar:
            pinned = pin_manifest(checkpoint, before.origin, output=target, jobs=jobs, progress=bar.update)
        click.echo(f"{pinned.origin}: {pinned.hashed - before.hashed} hash(es) added, "
                   f"{pinned.hashed}/{len(pinned.shards)} shards pinned")
        return
    ok = True
    if torrent is not None:
        ok = _pin_torrent(checkpoint, before, torrent, target, quiet)
    if hub_repo is not None:
        ok = _pin_hub(target if torrent is not None else before.origin, hub_repo, revision, target) and ok
    raise SystemExit(0 if ok else 1)


def _pin_torrent(checkpoint: Path, before, torrent: Path, target: Path, quiet: bool) -> bool:
    from ..checkpoint.manifest_ops import pin_from_torrent

    with _progress.bar(before.total_size, desc="pieces+sha256", quiet=quiet) as bar:
        result = pin_from_torrent(checkpoint, before.origin, torrent, output=target, progress=bar.update)
    _report_pins(result, before)
    return result.ok


def _pin_hub(manifest_file, repo: str, revision: str | None, target: Path) -> bool:
    from ..checkpoint.manifest import load_manifest
    from ..checkpoint.manifest_ops import pin_from_hub

    before = load_manifest(manifest_file)
    _report_pins(pin_from_hub(manifest_file, repo, revision=revision, output=target), before)
    return True


def _report_pins(result, before) -> None:
    for line in result.failed:
        click.echo(f"FAILED {line}", err=True)
    for line in result.unverified:
        click.echo(f"not pinned: {line}", err=True)
    m = result.manifest
    click.echo(f"{m.origin}: {len(result.pinned)} shard(s) pinned from {result.source} "
               f"({m.hashed - before.hashed} new), {m.hashed}/{len(m.shards)} shards have a sha256"
               + (f"; {len(result.failed)} FAILED" if result.failed else ""))


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
@click.option("--torrent", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also check every shard against this .torrent's v1 piece hashes (its infohash must be the "
                   "manifest's). Default: the <infohash>.torrent kept beside the data, for shards without sha256.")
@click.option("--fast", is_flag=True, help="Existence and sizes only; nothing hashed.")
@click.option("--deep", is_flag=True, help="Also check each shard's header against its tensor spec.")
@click.option("--strict", is_flag=True, help="Fail (exit 1) when a shard was proven neither by sha256 nor by pieces.")
@json_option
@quiet_option
def verify_command(checkpoint: Path, manifest_ref: str | None, jobs: int | None, torrent: Path | None, fast: bool,
                   deep: bool, strict: bool, as_json: bool, quiet: bool) -> None:
    """Check every shard against a manifest: presence, size, sha256 and/or the torrent's pieces.

    Each shard is proven by its sha256 (from the manifest), by the v1 piece hashes of the release torrent
    (--torrent, or the .torrent fetch keeps beside the data), or both; headers too with --deep.

    CHECKPOINT may also be a resharded store: then every array is re-hashed against the store's index
    (each bad array reported; the other options do not apply).

    Exit status 0 when everything matches, 1 when anything does not, 2 for usage errors.
    """
    from ..checkpoint.manifest import find_local_manifest, load_manifest
    from ..checkpoint.verify import verify
    from ..errors import UsageError
    from .store_verify import is_store, verify_store_command

    if is_store(checkpoint):
        verify_store_command(checkpoint, as_json=as_json, quiet=quiet)

    m = load_manifest(manifest_ref) if manifest_ref else find_local_manifest(checkpoint)
    if m is None:
        raise UsageError(f"{checkpoint}: no {LOCAL_MANIFEST_NAME} beside ckpt-0/; pass --manifest FILE|grok-1")
    total = 0 if fast else sum(s.size for s in m.shards if s.sha256 or torrent is not None)
    with _progress.bar(total, desc="verify", quiet=quiet) as bar:
        report = verify(checkpoint, m, jobs=jobs, fast=fast, deep=deep, torrent=torrent, progress=bar.update)
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
    methods: dict[str, int] = {}
    for r in report.results:
        if r.status == "ok" and r.method:
            methods[r.method] = methods.get(r.method, 0) + 1
    if methods:
        click.echo("proven by " + ", ".join(f"{k}: {v}" for k, v in sorted(methods.items()))
                   + (f" (torrent {report.mode['infohash_v1']})" if report.mode.get("infohash_v1") else ""))
    click.echo(f"\nmanifest {report.manifest}\nhashed {human_bytes(report.bytes_hashed)} in {report.seconds:.2f}s "
               f"({rate:.2f} GB/s, {report.jobs} jobs)")
    if report.unverified:
        click.echo(f"{len(report.unverified)} shard(s) unverified: sizes match but neither a sha256 nor the "
                   f"torrent's pieces proved them ({report.unverified[0].detail}); give --torrent or pin hashes "
                   "with `grokweights manifest pin`")
    if bad:
        click.echo(f"FAILED: {len(bad)} shard(s) do not match; re-run `grokweights fetch` to repair them")
    else:
        click.echo("OK")
