"""``grokweights demo``: the whole pipeline on an embedded tiny model."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from ._common import emit_json, human_bytes, json_option, table


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to work in: new, empty, or a previous demo's, whose parts a rerun replaces (default: a "
                   "new temporary folder, removed afterwards unless --keep).")
@click.option("--keep", is_flag=True, help="Keep the work folder.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the synthetic checkpoint (a non-negative integer).")
@json_option
def demo(workdir: Path | None, keep: bool, seed: int, as_json: bool) -> None:
    """Run every stage end to end on a tiny synthetic Grok-1 and print a summary table."""
    from ..demo import run_demo

    log = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    result = run_demo(workdir, seed=seed, log=log)
    try:
        if as_json:
            emit_json(result.to_dict())
        else:
            rows = [[s.name, human_bytes(s.bytes), f"{s.seconds:.2f}", s.result] for s in result.stages]
            click.echo("\n" + table(rows, ["stage", "bytes", "seconds", "result"]))
            click.echo(f"\ndemo passed: {len(result.stages)} stages")
    finally:
        if workdir is None and not keep:
            shutil.rmtree(result.workdir, ignore_errors=True)
        elif keep or workdir is not None:
            click.echo(f"work folder: {result.workdir}", err=True)
