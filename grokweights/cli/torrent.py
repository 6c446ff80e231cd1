"""Commands over BitTorrent: ``fetch``, ``seed`` and ``torrent create``.

Exit status of ``fetch``: 0 when every selected file verified, 1 when verification failed or on a torrent
error (unsafe names, stall, not enough space), 2 on bad usage, 130 when interrupted (resume data is saved;
run the same command again to continue).
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .. import _progress
from ._common import emit_json, human_bytes, json_option, quiet_option
from ._stream import check_reshard_options, fetch_reshard, reshard_options

__all__ = ["fetch", "seed", "torrent"]


def _json_line(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def _events(as_json: bool) -> Callable[[dict[str, Any]], None] | None:
    if as_json:
        return _json_line

    def show(event: dict[str, Any]) -> None:
        if event["event"] == "hash_failed":
            click.echo(f"piece {event['piece']} failed its hash check ({event['failures']} so far); "
                       "fetching it again from other peers", err=True)
        elif event["event"] == "peer_banned":
            click.echo(f"banned peer {event['peer']} for sending corrupt data", err=True)

    return show


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (the library then saves resume data); both exit 130."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    except KeyboardInterrupt:
        click.echo("grokweights: interrupted; resume data saved - run the same command to continue", err=True)
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from ..torrent.session import parse_rate

    return parse_rate(value)


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from ..torrent.session import parse_size

    return parse_size(value, what="piece size")


_peer = click.option("--peer", "peers", multiple=True, metavar="HOST:PORT",
                     help="Connect to this peer directly (repeatable).")
_listen = click.option("--listen", default="0.0.0.0:6881", show_default=True, metavar="HOST:PORT",
                       help="Address to listen on for peers (port 0: any free port).")
_no_dht = click.option("--no-dht", is_flag=True,
                       help="No DHT, local peer discovery or port mapping: only --peer, trackers and web seeds.")
_max_up = click.option("--max-upload-rate", callback=_rate, metavar="RATE",
                       help="Upload limit in bytes/s (suffixes K/M/G); default unlimited.")
_max_conn = click.option("--max-connections", type=click.IntRange(min=2), help="Cap on peer connections.")
_seed_ratio = click.option("--seed-ratio", type=click.FloatRange(min=0),
                           help="Stop seeding once uploaded bytes reach this multiple of the data.")
_seed_time = click.option("--seed-time", type=click.FloatRange(min=0), metavar="SECONDS",
                          help="Stop seeding after this many seconds.")


@click.command()
@click.argument("source", default="grok-1")
@click.option("--dest", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to download into (the torrent's top folder is created inside).")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Only files matching this glob, e.g. 'ckpt-0/tensor0000*' (repeatable).")
@click.option("--layers", metavar="RANGES",
              help="Only these decoder layers (e.g. 0-7), plus the embedding and final norm.")
@click.option("--manifest", metavar="NAME|FILE", help="Manifest to verify against when SOURCE is a magnet/.torrent.")
@_peer
@click.option("--web-seed", "web_seeds", multiple=True, metavar="URL",
              help="HTTP mirror (BEP 19) to download from alongside peers (repeatable).")
@click.option("--hub", metavar="OWNER/NAME[@REV]",
              help="Also download the torrent's files from this model-hub repository (HF_ENDPOINT, HF_TOKEN), "
                   "every piece checked against the torrent; its sha256 pinned as a second provenance.")
@click.option("--torrent", "torrent_file", type=click.Path(dir_okay=False, path_type=Path),
              help="The source's .torrent, for its metadata when no peer has it (a dead swarm).")
@click.option("--hub-sha256-only", is_flag=True,
              help="With --hub and no metadata anywhere: download from the hub checked by its sha256 alone.")
@click.option("--metadata-timeout", type=click.FloatRange(min=1), default=60, show_default=True, metavar="SECONDS",
              help="With --hub: how long to wait for the torrent's metadata from peers.")
@_listen
@_no_dht
@click.option("--max-download-rate", callback=_rate, metavar="RATE",
              help="Download limit in bytes/s (suffixes K/M/G); default unlimited.")
@_max_up
@_max_conn
@click.option("--seed", "keep_seeding", is_flag=True, help="Keep seeding after completion (until a limit or Ctrl-C).")
@_seed_ratio
@_seed_time
@click.option("--stall-timeout", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Give up after this many seconds without progress (default: wait).")
@click.option("--dry-run", is_flag=True, help="Show what would be fetched (files, bytes, free space) and exit.")
@reshard_options
@json_option
@quiet_option
def fetch(source: str, dest: Path, include: tuple[str, ...], layers: str | None, manifest: str | None,
          peers: tuple[str, ...], web_seeds: tuple[str, ...], listen: str, no_dht: bool,
          max_download_rate: int | None, max_upload_rate: int | None, max_connections: int | None,
          keep_seeding: bool, seed_ratio: float | None, seed_time: float | None, stall_timeout: float | None,
          dry_run: bool, as_json: bool, quiet: bool, hub: str | None, torrent_file: Path | None,
          hub_sha256_only: bool, metadata_timeout: float, **stream: Any) -> None:
    """Download a checkpoint by BitTorrent, resumably, then verify it.

    SOURCE is a shipped manifest name (default grok-1), a magnet URI or a .torrent file. With --json, one
    JSON event per line on stdout (states, completed files, hash failures, a final summary). With --reshard
    STORE --mesh SPEC, each shard is also converted into the store as soon as it is complete (the same store
    `reshard` of the download writes); rerun the same command after an interruption.
    """
    from ..torrent import fetch as fetch_checkpoint

    if hub_sha256_only and not hub:
        raise click.UsageError("--hub-sha256-only needs --hub OWNER/NAME")
    if hub_sha256_only and stream.get("reshard_store"):
        raise click.UsageError("--hub-sha256-only cannot be combined with --reshard (nothing is converted as it "
                               "lands without the torrent): run `grokweights reshard` on the download afterwards")
    hub_options = dict(hub=hub, torrent=torrent_file, hub_sha256_only=hub_sha256_only,
                       metadata_timeout=metadata_timeout)

    if check_reshard_options(stream) and not dry_run:  # a dry run plans the download; nothing is written
        with _interruptible():
            fetch_reshard(source, dest, stream["reshard_store"], mesh=stream["mesh_text"], rules=stream["rules"],
                          layers=layers, compression=stream["compression"], discard=stream["discard_source"],
                          as_json=as_json, quiet=quiet, base_events=_events(False), include=include or None,
                          manifest=manifest, peers=peers, web_seeds=web_seeds, listen=listen,
                          discovery=not no_dht, max_download_rate=max_download_rate,
                          max_upload_rate=max_upload_rate, max_connections=max_connections,
                          seed=keep_seeding, seed_ratio=seed_ratio, seed_time=seed_time, stall_timeout=stall_timeout,
                          **hub_options)

    with _interruptible(), _progress.bar(None, desc="fetch", quiet=quiet or as_json) as bar:
        report = fetch_checkpoint(
            source, dest, include=include or None, layers=layers, manifest=manifest, peers=peers,
            web_seeds=web_seeds, listen=listen, discovery=not no_dht, max_download_rate=max_download_rate,
            max_upload_rate=max_upload_rate, max_connections=max_connections, dry_run=dry_run,
            seed=keep_seeding, seed_ratio=seed_ratio, seed_time=seed_time, stall_timeout=stall_timeout,
            progress=bar, on_event=_events(as_json), **hub_options)
    if as_json:
        _json_line({"event": "summary", **report.to_dict()})
    else:
        _show_fetch(report)
    if report.dry_run and report.extra.get("does_not_fit"):  # after the plan: what would be fetched, then why not
        from ..errors import InsufficientSpaceError

        raise InsufficientSpaceError(report.extra["does_not_fit"], path=report.dest, expected=report.needed_bytes,
                                     actual=report.free_bytes)
    raise SystemExit(0 if report.ok else 1)


def _show_fetch(report: Any) -> None:
    if report.dry_run:
        for f in report.files:
            click.echo(f"{f['size']:>15,}  {f['path']}")
        click.echo(f"{len(report.files)} of {report.total_files} files, {human_bytes(report.selected_bytes)}; "
                   f"{human_bytes(report.needed_bytes)} still to fetch, {human_bytes(report.free_bytes)} free "
                   f"at {report.dest}")
        if report.extra.get("metadata") == "pending":
            click.echo(f"from manifest {report.manifest}: the torrent's metadata (its top folder, any files besides "
                       "the shards) is still to come from peers")
        return
    click.echo(f"{report.name}: {len(report.files)} files, {human_bytes(report.selected_bytes)} in {report.dest} "
               f"({human_bytes(report.downloaded_bytes)} downloaded, {human_bytes(report.resumed_bytes)} already "
               f"there, {report.hash_failures} hash failures, {report.seconds:.1f} s)")
    click.echo(f"torrent: {report.torrent}" if report.torrent else f"torrent: none - {report.extra.get('note')}")
    if "hub" in report.extra:
        hub = report.extra["hub"]
        click.echo(f"hub {hub['repo']}@{hub.get('commit') or hub['revision']}: {human_bytes(hub['hub_bytes'])} from "
                   f"the hub, {human_bytes(hub['peer_bytes'])} from peers, {len(hub.get('bad_pieces', []))} hub "
                   f"pieces failed their hash, {hub.get('sha256_pinned', 0)} sha256 pinned from the hub")
    if report.manifest:
        click.echo(f"manifest: {report.manifest}")
    verification = report.verification
    for problem in verification.problems if verification is not None else ():
        click.echo(f"problem: {problem['path']}: {problem['status']} (expected {problem['expected']}, "
                   f"found {problem['actual']})", err=True)
    for result in verification.report.failures if verification is not None and verification.report else ():
        click.echo(f"problem: {result.path}: {result.status} {result.detail}", err=True)
    alone = " (by the hub's sha256 alone)" if report.extra.get("provenance") == "hub-sha256-only" else ""
    click.echo(f"verified: ok{alone}" if report.ok else "verified: FAILED - re-run the same command to repair")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--torrent", "torrent_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The .torrent of the data (default: found in DIR or beside it, else created).")
@_listen
@_peer
@_no_dht
@_max_up
@_max_conn
@_seed_ratio
@_seed_time
@json_option
@quiet_option
def seed(directory: Path, torrent_file: Path | None, listen: str, peers: tuple[str, ...], no_dht: bool,
         max_upload_rate: int | None, max_connections: int | None, seed_ratio: float | None,
         seed_time: float | None, as_json: bool, quiet: bool) -> None:
    """Check a local checkpoint against its torrent and serve it, printing the magnet link.

    DIR is what `fetch --dest` was, or the torrent's top folder. A copy that fails the check is refused.
    """
    from ..torrent import seed as seed_checkpoint

    def ready(seeder: Any) -> None:
        if as_json:
            return  # the "seeding" event carries the magnet link
        click.echo(seeder.magnet)
        sys.stdout.flush()
        click.echo(f"seeding {seeder.save_path} on port {seeder.port}; Ctrl-C to stop", err=True)

    with _progress.bar(None, desc="check", quiet=quiet or as_json) as bar:
        report = seed_checkpoint(directory, torrent=torrent_file, listen=listen, discovery=not no_dht, peers=peers,
                                 max_upload_rate=max_upload_rate, max_connections=max_connections,
                                 seed_time=seed_time, seed_ratio=seed_ratio, on_ready=ready,
                                 on_event=_events(as_json), progress=bar)
    if as_json:
        _json_line({"event": "summary", **report.to_dict()})
    else:
        click.echo(f"uploaded {human_bytes(report.uploaded_bytes)} in {report.seconds:.1f} s", err=True)


@click.group()
def torrent() -> None:
    """Make torrents of local checkpoints."""


@torrent.command("create")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Torrent file to write (default DIR/<infohash>.torrent); an existing file only with --force.")
@click.option("--piece-size", callback=_size, metavar="SIZE",
              help="Bytes per piece, a power of two (e.g. 16M); default suits the total size.")
@click.option("--web-seed", "web_seeds", multiple=True, metavar="URL", help="HTTP mirror (BEP 19) (repeatable).")
@click.option("--tracker", "trackers", multiple=True, metavar="URL", help="Announce URL (repeatable).")
@click.option("--comment", help="Free text stored in the torrent.")
@click.option("--force", is_flag=True, help="Let -o replace an existing file (never a shard).")
@json_option
@quiet_option
def create(directory: Path, output: Path | None, piece_size: int | None, web_seeds: tuple[str, ...],
           trackers: tuple[str, ...], comment: str | None, force: bool, as_json: bool, quiet: bool) -> None:
    """Make a BitTorrent v1 torrent of a local checkpoint folder (hidden files and .torrent files left out)."""
    from ..torrent import create_torrent, describe_torrent

    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    with _progress.bar(total, desc="hash", quiet=quiet or as_json) as bar:
        path = create_torrent(directory, output, piece_size=piece_size, web_seeds=web_seeds, trackers=trackers,
                              comment=comment, progress=bar.update, force=force)
    info = describe_torrent(path)
    if as_json:
        emit_json(info.to_dict())
    else:
        click.echo(f"{path}: {info.files} files, {human_bytes(info.bytes)}, {info.pieces} pieces of "
                   f"{human_bytes(info.piece_size)}")
        click.echo(info.magnet)
