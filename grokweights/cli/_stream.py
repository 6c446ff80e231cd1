"""``fetch --reshard`` and ``reshard --follow``: one display with download and conversion side by side."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import _progress
from ._common import human_bytes

__all__ = ["fetch_reshard", "follow"]


def _json_line(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def _shown(base: Any, as_json: bool) -> Any:
    """The event sink: JSON lines, or ``base`` plus one line for the space preflight."""
    if as_json:
        return _json_line

    def show(event: dict[str, Any]) -> None:
        if event["event"] == "preflight":
            where = "in flight (--discard-source)" if event["discard_source"] else "to download"
            click.echo(f"space: store {human_bytes(event['store_bytes'])} still to write, source "
                       f"{human_bytes(event['source_bytes'])} {where}; {human_bytes(event['free'])} free", err=True)
        elif base is not None:
            base(event)

    return show


def fetch_reshard(source: str, dest: Any, store: str, *, mesh: str, rules: str, layers: str | None,
                  compression: str, discard: bool, as_json: bool, quiet: bool, base_events: Any,
                  **fetch_options: Any) -> None:
    """Run :func:`grokweights.stream.fetch_and_reshard` with two bars (download, convert); exits 0 when complete."""
    from ..stream import fetch_and_reshard

    with _progress.bar(None, desc="download", quiet=quiet or as_json) as down, \
            _progress.bar(None, desc="convert", quiet=quiet or as_json) as conv:
        report = fetch_and_reshard(source, dest, store, mesh, rules=rules, layers=layers, compression=compression,
                                   discard_source=discard, convert_progress=conv.update, progress=down,
                                   on_event=_shown(base_events, as_json), **fetch_options)
    if as_json:
        _json_line({"event": "summary", **report.to_dict()})
    else:
        f = report.fetch
        click.echo(f"{f.name}: {len(f.files)} files, {human_bytes(f.downloaded_bytes)} downloaded in "
                   f"{f.seconds:.1f} s ({f.hash_failures} hash failures)")
        click.echo(f"store {report.store}: {report.arrays} arrays complete, {len(report.converted)} shards converted "
                   f"({human_bytes(report.bytes_converted)}, {report.convert_seconds:.1f} s of conversion), "
                   f"{len(report.discarded)} source shards discarded; {report.seconds:.1f} s in all")
    raise SystemExit(0 if report.ok else 1)


def follow(src: Any, dst: str, *, mesh: str, rules: str, dtype: str, compression: str, jobs: int | None,
           layers: str | None, manifest: str | None, sync: bool, poll: float, settle: float,
           timeout: float | None, as_json: bool, quiet: bool) -> None:
    """Run :func:`grokweights.stream.follow` with a conversion bar; JSON events with ``--json``."""
    from ..stream import follow as run

    with _progress.bar(None, desc="follow", quiet=quiet or as_json) as bar:
        report = run(src, dst, mesh, manifest=manifest, rules=rules, layers=layers, compression=compression,
                     dtype=dtype, jobs=jobs, sync=sync, poll=poll, settle=settle, timeout=timeout,
                     on_event=_json_line if as_json else None, progress=bar.update)
    if as_json:
        _json_line({"event": "summary", **report.to_dict()})
    else:
        click.echo(f"followed {src}: {len(report.converted)} shards converted ({human_bytes(report.bytes_converted)}) "
                   f"in {report.seconds:.1f} s; {report.arrays} arrays complete; store: {dst}")


def reshard_options(f: Any) -> Any:
    """``--reshard STORE --mesh SPEC [--rules R] [--compression C] [--discard-source]`` for ``fetch``."""
    for option in reversed((
        click.option("--reshard", "reshard_store", metavar="STORE",
                     help="Reshard into this store while downloading: each shard is converted as soon as it is "
                     "complete and has passed its piece hashes (needs --mesh; the index is written last)."),
        click.option("--mesh", "mesh_text", metavar="SPEC",
                     help="With --reshard: the target mesh, e.g. data=1,model=8."),
        click.option("--rules", default="grok1", show_default=True, help="With --reshard: partition rules "
                     "(grok1, expert or a JSON rules file)."),
        click.option("--compression", default="none", show_default=True,
                     help="With --reshard: chunk codec, none or zstd[:LEVEL]."),
        click.option("--discard-source", is_flag=True, help="With --reshard: delete each shard once its arrays are "
                     "durable (peak disk: the store plus the shards in flight; no uploading)."),
    )):
        f = option(f)
    return f


def check_reshard_options(stream: dict[str, Any]) -> bool:
    """Whether ``--reshard`` was given; refuses its companions without it and it without ``--mesh``."""
    if stream["reshard_store"] is None:
        if stream["mesh_text"] or stream["discard_source"]:
            raise click.UsageError("--mesh and --discard-source need --reshard STORE")
        return False
    if not stream["mesh_text"]:
        raise click.UsageError("--reshard needs --mesh, e.g. --mesh data=1,model=8")
    return True
