"""``grokweights verify STORE``: the store half of the verify command (the checkpoint half is in :mod:`.core`).

Detection needs no import of the store package, so verifying a checkpoint stays as fast to start as before.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from .. import _progress
from ..checkpoint.paths import STORE, source_kind
from ._common import emit_json, human_bytes, table

__all__ = ["is_store", "verify_store_command"]


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``verify PATH`` checks a store (see :func:`grokweights.checkpoint.paths.source_kind`)."""
    return source_kind(path) == STORE


def verify_store_command(store: Path, *, as_json: bool, quiet: bool) -> None:
    """Re-hash every array of ``store`` against its index; exit 0 when all match, 1 otherwise."""
    from ..store import Store
    from ..store.verify import verify_store

    total = Store(store).plan.total_bytes
    with _progress.bar(total, desc="verify", quiet=quiet) as bar:
        report = verify_store(store, progress=bar.update)
    if as_json:
        emit_json(report.to_dict())
    else:
        _render(report)
    raise SystemExit(0 if report.ok else 1)


def _render(report) -> None:
    bad = report.failures
    if bad:
        click.echo(table([[a.path, a.status, a.detail] for a in bad], ["array", "problem", "detail"]))
        click.echo("")
    rate = report.bytes_hashed / report.seconds / 1e9 if report.seconds else 0
    click.echo(f"store {report.location}: {len(report.arrays)} arrays, {human_bytes(report.bytes_hashed)} re-hashed "
               f"in {report.seconds:.2f}s ({rate:.2f} GB/s); index digest {report.digest}")
    if bad:
        click.echo(f"FAILED: {len(bad)} array(s) do not match the store index; delete each one's folder and rerun "
                   "`grokweights reshard` into the store")
    else:
        click.echo("OK")
