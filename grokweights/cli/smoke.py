"""The ``smoke`` and ``plan`` commands: run the forward pass on a store, or size it for a machine first."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ._common import Gibibytes, config_options, emit_json, human_bytes, json_option, resolve_config, table

GiB = 1024**3
#: bounds of a smoke run's input: sequences, tokens in all (batch x length), simulated CPU devices (XLA's host
#: platform crashes far above this).
MAX_BATCH = 4096
MAX_TOKENS = 1 << 20
MAX_HOST_DEVICES = 4096


def _check_outputs(save_expect: Path | None, force: bool) -> None:
    """Refuse, before the run, a --save-expect that would overwrite a file (without --force), write into a
    checkpoint's folder or into a folder that does not exist."""
    if save_expect is not None:
        from ..checkpoint.files import check_output

        check_output(save_expect, force=force, option="--save-expect", what="a fingerprint")


def _tolerance(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """--tolerance: a finite number >= 0 (NaN would pass every comparison)."""
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"{value} is not a finite number >= 0; give an absolute logit tolerance such as "
                                 "0.05", ctx=ctx, param=param)
    return value


def _check_tokens(tokens, batch: int | None) -> None:
    """Refuse, before loading anything, more tokens than a smoke run may hold."""
    if not tokens:
        return
    sequences = batch or len(tokens)
    length = max(len(row) for row in tokens)
    if sequences * length > MAX_TOKENS:
        raise click.BadParameter(f"{sequences} sequences of {length} tokens is more than {MAX_TOKENS} tokens; "
                                 "use a smaller --batch or fewer --tokens", param_hint="--batch")


def _gib(value: float | None) -> int | None:
    return None if value is None else int(value * GiB)


def _layers_text(layers) -> str:
    if not layers:
        return "none"
    runs, start = [], layers[0]
    for prev, cur in zip(layers, [*layers[1:], None], strict=True):
        if cur != prev + 1:
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(runs)


def _render_plan(p) -> None:
    acts = ", ".join(f"{k} {human_bytes(v)}" for k, v in p.activations.items())
    click.echo(f"mesh {p.mesh} (rules {p.rules}) on {p.devices} devices; layers {_layers_text(p.layers)}; "
               f"batch {p.batch} x {p.length} tokens; {p.dtype}")
    click.echo(f"per device: weights {human_bytes(p.weight_bytes)} + activations {human_bytes(p.activation_bytes)}"
               f" = {human_bytes(p.total_bytes)}")
    click.echo(f"  activations (estimate, before margin): {acts}")
    click.echo(f"host: {human_bytes(p.host_bytes)}" + (f" of {human_bytes(p.host_memory)}" if p.host_memory else ""))
    if p.options:
        rows = [[o.mesh, human_bytes(o.weight_bytes), human_bytes(o.activation_bytes), human_bytes(o.total_bytes),
                 {True: "yes", False: "no", None: "?"}[o.fits]] for o in p.options]
        click.echo("\n" + table(rows, ["mesh", "weights", "activations", "per device", "fits"]))
    for problem in p.problems:
        click.echo(f"problem: {problem}")
    if p.max_layers is not None:
        click.echo(f"layers that fit on mesh {p.mesh}: {p.max_layers}")
    if p.fits is None:
        click.echo("fits: unknown (give --device-memory)")
    else:
        click.echo("fits: yes" if p.fits else "fits: no, does not fit"
                   + (f"; try --mesh {p.suggestion}" if p.suggestion and p.suggestion != p.mesh else ""))


@click.command()
@click.option("--mesh", "mesh_text", required=True, help="Mesh as NAME=SIZE pairs, e.g. data=1,model=8.")
@click.option("--preset", "preset_name", type=click.Choice(["grok-1", "tiny"]), help="Model config preset "
              "(default: grok-1).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Model config as a JSON file with the config's field names.")
@click.option("--rules", default="grok1", show_default=True, help="Partition rules: grok1, expert or a JSON file.")
@click.option("--layers", help="Decoder layers to run, e.g. 0-7 (default: all).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per pass.")
@click.option("--length", type=click.IntRange(min=1), default=16, show_default=True, help="Tokens per sequence.")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="Compute dtype.")
@click.option("--store-dtype", type=click.Choice(["keep", "bfloat16"]), default="keep", show_default=True,
              help="The store's dtype: keep (int8 + scales) or bfloat16 (dequantised).")
@click.option("--devices", type=click.IntRange(min=1), help="Devices on the machine (default: the mesh's size).")
@click.option("--device-memory", type=Gibibytes(), help="GiB of memory per device.")
@click.option("--host-memory", type=Gibibytes(), help="GiB of host memory.")
@click.option("--cpu", "shared_host", is_flag=True, help="The devices are host CPUs (their memory is host memory).")
@json_option
def plan(mesh_text: str, preset_name: str | None, config_file: Path | None, rules: str, layers: str | None,
         batch: int, length: int, dtype: str, store_dtype: str, devices: int | None, device_memory: float | None,
         host_memory: float | None, shared_host: bool, as_json: bool) -> None:
    """Bytes per device of a forward pass on a mesh, whether it fits, and which mesh would.

    Nothing is loaded. Exit status 1 when it does not fit, 0 when it fits or memory was not given.
    """
    from ..sharding.sizing import plan_memory

    config = resolve_config(preset_name or (None if config_file else "grok-1"), config_file)
    result = plan_memory(config, mesh_text, rules=rules, layers=layers, batch=batch, length=length, dtype=dtype,
                          store_dtype=store_dtype, devices=devices, device_memory=_gib(device_memory),
                          host_memory=_gib(host_memory), shared_host=shared_host)
    if as_json:
        emit_json(result.to_dict())
    else:
        _render_plan(result)
    raise SystemExit(1 if result.fits is False else 0)


def _render_report(report) -> None:
    d = report.to_dict()
    devices = report.devices
    shown = ", ".join(devices) if len(devices) <= 4 else f"{devices[0]} .. {devices[-1]} ({len(devices)})"
    click.echo(f"store   {report.store} ({report.source})")
    click.echo(f"mesh    {report.mesh} on {shown}")
    click.echo(f"run     layers {_layers_text(report.layers)}, {report.dtype}, batch {d['batch']} x {d['length']} "
               "tokens")
    click.echo(f"load    {human_bytes(report.load_bytes)} in {report.load_seconds:.2f} s")
    click.echo(f"compile {report.compile_seconds:.2f} s")
    click.echo(f"forward {report.run_seconds:.3f} s ({report.tokens_per_second:.1f} tokens/s)")
    click.echo("next tokens (top 5, last position):")
    for b, row in enumerate(report.top):
        items = "  ".join(f"{t.id}{' ' + repr(t.text) if t.text is not None else ''} ({t.logit:.3f})" for t in row)
        click.echo(f"  [{b}] {items}")
    click.echo(table([["ok" if c.ok else "FAIL", c.name, c.detail] for c in report.checks],
                     ["result", "check", "detail"]))
    failed = [c.name for c in report.checks if not c.ok]
    click.echo("smoke: ok" if not failed else f"smoke: FAILED ({', '.join(failed)})")


@click.command()
@click.argument("store")
@click.option("--mesh", "mesh_text", help="Mesh to load onto, e.g. data=2,model=4, or 'single' (default: the "
              "store's mesh). Uses that many devices of the default backend.")
@click.option("--layers", help="Decoder layers to run, e.g. 0-1 (default: all the store holds).")
@click.option("--prompt", help="Text to run (needs --tokenizer).")
@click.option("--tokenizer", type=click.Path(dir_okay=False, path_type=Path),
              help="SentencePiece tokenizer.model for --prompt and for decoding the top tokens.")
@click.option("--tokens", "tokens_text", help="Token ids instead of a prompt: 1,2,3 or 1,2,3;4,5,6 for a batch.")
@click.option("--batch", type=click.IntRange(min=1, max=MAX_BATCH), help="Run this many sequences (the given ones, "
              f"repeated; at most {MAX_BATCH}, and {MAX_TOKENS} tokens in all).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float32"]), default="bfloat16", show_default=True,
              help="Compute dtype (float32 for tight comparisons).")
@click.option("--axis-types", type=click.Choice(["auto", "explicit"]), default="auto", show_default=True,
              help="Mesh axis types to load and run with (explicit: what jax.make_mesh builds by default).")
@click.option("--check-mesh", help="Also run on this mesh ('single' for one device) and compare the logits.")
@click.option("--tolerance", type=float, callback=_tolerance, help="Absolute logit tolerance for --check-mesh and "
              "for a fingerprint written with --save-expect (default: a share of the logits' scale).")
@click.option("--expect", type=click.Path(dir_okay=False, path_type=Path),
              help="Fingerprint file the logits must match (written earlier with --save-expect).")
@click.option("--save-expect", type=click.Path(dir_okay=False, path_type=Path),
              help="Write this run's logits fingerprint here (an existing file only with --force).")
@click.option("--force", is_flag=True, help="Let --save-expect replace an existing file (never a shard).")
@click.option("--host-devices", type=click.IntRange(min=1, max=MAX_HOST_DEVICES), help="Simulate this many CPU "
              f"devices (at most {MAX_HOST_DEVICES}; for machines "
              "without accelerators; same as XLA_FLAGS=--xla_force_host_platform_device_count=N).")
@click.option("--dry-run", is_flag=True, help="Only size the run for this machine (see `grokweights plan`).")
@click.option("--device-memory", type=Gibibytes(),
              help="GiB per device for --dry-run (default: what the backend reports).")
@config_options
@json_option
def smoke(store: str, mesh_text: str | None, layers: str | None, prompt: str | None, tokenizer: Path | None,
          tokens_text: str | None, batch: int | None, dtype: str, axis_types: str, check_mesh: str | None,
          tolerance: float | None,
          expect: Path | None, save_expect: Path | None, force: bool, host_devices: int | None, dry_run: bool,
          device_memory: float | None,
          preset_name: str | None, config_file: Path | None, as_json: bool) -> None:
    """Load STORE onto the devices, run the Grok-1 forward pass and check the logits.

    STORE is a resharded store (or a folder holding ckpt-0/). Checks: shape, finite, deterministic, and
    with --check-mesh / --expect equality with another mesh / a saved fingerprint. Exit status 0 only
    when every check passed.
    """
    from ..model.tokenizer import parse_token_ids
    from ..runtime.smoke import simulate_cpu_devices, smoke_plan
    from ..runtime.smoke import smoke as run_smoke

    _check_outputs(save_expect, force)
    if host_devices is not None:
        simulate_cpu_devices(host_devices)
    tokens = parse_token_ids(tokens_text) if tokens_text is not None else None
    _check_tokens(tokens, batch)
    config = resolve_config(preset_name, config_file)
    common = dict(mesh=mesh_text, layers=layers, tokens=tokens, prompt=prompt, tokenizer=tokenizer, batch=batch,
                  dtype=dtype, config=config)
    if dry_run:
        result = smoke_plan(store, **common, device_memory=_gib(device_memory))
        emit_json(result.to_dict()) if as_json else _render_plan(result)
        raise SystemExit(1 if result.fits is False else 0)
    report = run_smoke(store, **common, check_mesh=check_mesh, tolerance=tolerance, expect=expect,
                       save_expect=save_expect, axis_types=axis_types, force=force)
    emit_json(report.to_dict()) if as_json else _render_report(report)
    raise SystemExit(0 if report.ok else 1)
