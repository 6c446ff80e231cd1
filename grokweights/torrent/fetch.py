"""``fetch``: a checkpoint over BitTorrent, selective, resumable, checked for space and verified.

Steps: resolve SOURCE (manifest name, magnet, ``.torrent``) -> add the torrent with every file at
priority 0 -> metadata (from the saved ``.torrent`` or from peers) -> refuse unsafe file names -> select
files -> preflight free space -> download (resume data saved periodically and on interruption) -> flush
-> verify (sizes always; each shard by the torrent's pieces when the manifest names this infohash, with
its sha256 taken in the same read and pinned in the local manifest as ``torrent:<infohash>``; sha256
where the manifest has them) -> optionally keep seeding. See
:mod:`grokweights.torrent.meta` for the files kept beside the data.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from ..checkpoint.files import make_folder
from ..constants import LOCAL_MANIFEST_NAME
from ..errors import UsageError
from .completed import Completion
from .hubfetch import METADATA_TIMEOUT, HubSource, NoMetadata
from .hubseed import is_bridge_url
from .loop import TorrentRun, emit_event
from .meta import Source, check_info_dict, load_torrent, resolve_source, source_params, torrent_bytes, write_torrent
from .offline import dry_run_from_manifest, metadata_from
from .report import FetchReport, FetchVerification
from .select import (
    TorrentFile,
    check_sizes,
    checkpoint_root,
    file_table,
    plan_space,
    require_manifest_for_layers,
    select_files,
)
from .session import SessionOptions, add_flags, make_session, parse_endpoint
from .state import DownloadState

__all__ = ["fetch", "FetchOptions", "FetchReport", "FetchVerification"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchOptions:
    """How to fetch: what to select, whom to talk to, limits, and what to do afterwards.

    Attributes:
        include: globs selecting files (torrent path, path below the top folder, file name or shard path).
        layers: decoder layers to fetch (``"0-7"``), plus the shared embedding and final norm; needs a manifest.
        manifest: manifest (object, name or path) to verify against when the source is not one.
        peers: ``HOST:PORT`` peers to connect to directly.
        web_seeds: HTTP mirrors (BEP 19) fetched from alongside peers.
        listen: ``HOST:PORT`` to listen on (port 0: any free port).
        discovery: DHT, local peer discovery, UPnP and NAT-PMP (off: only given peers, trackers, web seeds).
        max_download_rate: bytes per second (None: unlimited).
        max_upload_rate: bytes per second (None: unlimited).
        max_connections: peer connection cap.
        dry_run: report what would be fetched (needs the metadata) and stop.
        seed: keep seeding after completion until ``seed_ratio``/``seed_time`` or an interrupt.
        seed_ratio: stop seeding once uploaded / selected bytes reaches this (implies ``seed``).
        seed_time: stop seeding after this many seconds (implies ``seed``).
        stall_timeout: give up after this many seconds without progress (None: wait forever).
        resume_interval: seconds between resume-data saves.
        verify: verify the selected files after the download.
        free_space: ``free_space(dest) -> bytes`` for the preflight (default: the file system's figure, or
            ``GROKWEIGHTS_FREE_SPACE_BYTES``).
        progress: a progress sink (e.g. from :func:`grokweights._progress.bar`), in bytes.
        on_event: called with one dict per event (state changes, per-file completion, hash failures, ...).
        on_selected: ``on_selected(files, selected) -> selected`` refines the selection before the preflight
            (e.g. leaves out files whose data is already used elsewhere).
        check_space: run the free-space preflight (off when the caller does its own).
        on_run: called with the :class:`TorrentRun` once the selection is applied, before the download
            (e.g. to set file priorities or watch file progress).
        hub: ``OWNER/NAME[@REVISION]``: the hub repository's files as a second source of the same torrent
            (every piece still checked against the torrent), its LFS sha256 checked and pinned as a second
            provenance (see :mod:`grokweights.torrent.hubfetch`).
        hub_endpoint: the hub (default ``HF_ENDPOINT``, else the public hub).
        hub_sha256_only: with ``hub``, when no metadata comes from peers, download from the hub checked by
            its sha256 alone (and say so) instead of refusing.
        metadata_timeout: with ``hub``, seconds to wait for the metadata from peers.
        torrent: a ``.torrent`` file of the source's torrent to take the metadata from (a dead swarm).
    """

    include: Iterable[str] | None = None
    layers: str | None = None
    manifest: Any = None
    peers: Iterable[str | tuple[str, int]] = ()
    web_seeds: Iterable[str] = ()
    listen: str = "0.0.0.0:6881"
    discovery: bool = True
    max_download_rate: int | None = None
    max_upload_rate: int | None = None
    max_connections: int | None = None
    dry_run: bool = False
    seed: bool = False
    seed_ratio: float | None = None
    seed_time: float | None = None
    stall_timeout: float | None = None
    resume_interval: float = 30.0
    verify: bool = True
    free_space: Callable[[Path], int] | None = None
    progress: Any = None
    on_event: Callable[[dict[str, Any]], None] | None = None
    on_selected: Callable[[list[TorrentFile], list[TorrentFile]], list[TorrentFile]] | None = None
    check_space: bool = True
    on_run: Callable[[TorrentRun], None] | None = None
    hub: str | None = None
    hub_endpoint: str | None = None
    hub_sha256_only: bool = False
    metadata_timeout: float = METADATA_TIMEOUT
    torrent: str | os.PathLike[str] | None = None

    @property
    def seeding(self) -> bool:
        """Whether to keep seeding after the download."""
        return self.seed or self.seed_ratio is not None or self.seed_time is not None

    def session(self) -> SessionOptions:
        return SessionOptions(listen=self.listen, discovery=self.discovery, max_download_rate=self.max_download_rate,
                              max_upload_rate=self.max_upload_rate, max_connections=self.max_connections)


@dataclass
class _Job:
    source: Source
    dest: Path
    state: DownloadState
    options: FetchOptions
    atp: Any  # the add_torrent_params the source parses to (parsed once)
    peers: tuple[tuple[str, int], ...]
    files: list[TorrentFile] = field(default_factory=list)
    selected: list[TorrentFile] = field(default_factory=list)
    hub: HubSource | None = None


def _add_params(job: _Job) -> tuple[Any, bool]:
    """The add_torrent_params: source, saved metadata and (trusted) resume data; and whether it was trusted."""
    import libtorrent as lt

    atp = job.atp
    resume, trusted = job.state.load_resume()
    if atp.ti is None and job.state.torrent_path.is_file():
        atp.ti = load_torrent(job.state.torrent_path).ti  # a corrupt saved .torrent: TorrentError naming it
    if atp.ti is None and resume is not None and resume.ti is not None:
        atp.ti = resume.ti
    if trusted and resume is not None:
        resume.ti = resume.ti or atp.ti
        resume.trackers = list(dict.fromkeys([*resume.trackers, *atp.trackers]))
        resume.url_seeds = [u for u in dict.fromkeys([*resume.url_seeds, *atp.url_seeds]) if not is_bridge_url(u)]
        resume.peers = list(atp.peers)
        resume.file_priorities = []  # nothing is wanted until this run's selection is applied
        atp = resume
    atp.save_path = str(job.dest)
    atp.url_seeds = list(dict.fromkeys([*atp.url_seeds, *job.options.web_seeds]))
    atp.peers = list(dict.fromkeys([*atp.peers, *job.peers]))
    atp.flags = add_flags(atp.flags, discovery=job.options.discovery, extra=lt.torrent_flags.default_dont_download)
    if atp.ti is not None:
        # metadata at hand: stay paused (no announce, no connection) until the selection is applied. Running,
        # a torrent that wants nothing is finished; a seeder found meanwhile (a tracker answers at once) is
        # dropped as "upload to upload" and libtorrent never counts it as a candidate again
        atp.flags |= lt.torrent_flags.paused
    return atp, trusted


def _on_metadata(job: _Job, ti: Any, atp_trackers: list[str]) -> None:
    """Check the names, save the ``.torrent`` and read the file table, before anything is written."""
    check_info_dict(ti.info_section(), where=f"torrent {job.state.infohash}")
    if not job.state.torrent_path.is_file():
        write_torrent(job.state.torrent_path, torrent_bytes(ti.info_section(), trackers=atp_trackers,
                                                            web_seeds=job.options.web_seeds))
    job.files = file_table(ti)


def _torrent_has_manifest(job: _Job, root: str) -> bool:
    return any(f.path == (f"{root}/" if root else "") + LOCAL_MANIFEST_NAME for f in job.files)


def _write_local_manifest(job: _Job, manifest: Any) -> Path | None:
    """Record the manifest beside ``ckpt-0`` so ``verify``/``reshard`` find it (unless the torrent has one)."""
    root = checkpoint_root(job.files)
    if manifest is None or root is None:
        return None
    path = job.dest / root / LOCAL_MANIFEST_NAME
    if _torrent_has_manifest(job, root):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.save(path)
    return path


def _verify(job: _Job, manifest: Any) -> FetchVerification:
    """Sizes of every selected file, then the manifest's checks (sha256 where known) for the shards."""
    problems = tuple(check_sizes(job.dest, job.selected))
    root = checkpoint_root(job.files)
    shards = [f.shard for f in job.selected if f.shard]
    local = job.dest / (root or "") / LOCAL_MANIFEST_NAME
    if manifest is None and root is not None and local.is_file():
        from ..checkpoint.manifest import load_manifest

        manifest = load_manifest(local)
    report = None
    if manifest is not None and shards:
        from ..checkpoint.verify import verify

        same = (getattr(manifest.sources, "infohash_v1", None) or "").lower() == job.state.infohash
        torrent = job.state.torrent_path if same and job.state.torrent_path.is_file() else None
        report = verify(job.dest / root, manifest, only=shards, torrent=torrent)
        if torrent is not None and not _torrent_has_manifest(job, root):
            from ..checkpoint.manifest import with_hashes
            from ..checkpoint.manifest_ops import proven_pins

            pins = proven_pins(report)  # sha256 taken in the same read that proved the pieces
            if pins:
                pinned = with_hashes(manifest, pins, source=f"torrent:{job.state.infohash}")
                if job.hub is not None:  # the hub's LFS sha256, a second provenance where it agrees
                    paths = {f.shard: job.hub.bridge.paths[f.path] for f in job.files if f.shard}
                    agree, differ = job.hub.cross_check(pins, paths.__getitem__)
                    pinned, problems = with_hashes(pinned, agree, source=job.hub.source), (*problems, *differ)
                pinned.save(job.dest / root / LOCAL_MANIFEST_NAME)
    return FetchVerification(checked=len(job.selected), problems=problems, report=report)


_DEST_FIX = "give a folder (new or existing) to download into"


def fetch(source: str | os.PathLike[str] = "grok-1", dest: str | os.PathLike[str] = ".",
          options: FetchOptions | None = None, **overrides: Any) -> FetchReport:
    """Fetch a checkpoint by BitTorrent into ``dest``; resumable, selective, verified.

    Args:
        source: a shipped manifest name (``grok-1``) or manifest file, a ``magnet:`` URI, or a ``.torrent``.
        dest: the destination folder; the torrent's top folder is created inside it.
        options: a :class:`FetchOptions`; any of its fields may also be given as keywords
            (``fetch(src, dest, include=[...], peers=[...])``), overriding ``options``.

    Returns:
        A :class:`FetchReport`; ``ok`` tells whether every selected file verified.

    Raises:
        TorrentError: unsafe file names, a torrent/file error, or a stall.
        InsufficientSpaceError: the selection does not fit at ``dest``.
        UsageError: bad options.
    """
    options = _options(options, overrides)
    options.session()  # a bad --listen is refused before anything else, a dry run included
    dest = Path(dest).resolve()
    make_folder(dest, what="--dest", fix=_DEST_FIX, create=False)
    src = resolve_source(source, manifest=options.manifest)
    require_manifest_for_layers(options.layers, src.manifest)
    endpoints = tuple(p if isinstance(p, tuple) else parse_endpoint(p) for p in options.peers)
    atp, infohash = source_params(src)  # refuses a manifest of another torrent
    if options.torrent is not None and atp.ti is None:
        atp.ti = metadata_from(options.torrent, src, infohash)
    job = _Job(src, dest, DownloadState(dest, infohash), options, atp, endpoints)
    if options.dry_run and atp.ti is not None:  # the metadata at hand answers: no session, nothing written
        check_info_dict(atp.ti.info_section(), where=f"torrent {infohash}")
        job.files = file_table(atp.ti)
        return _selection(job, atp.ti.name(), partial(emit_event, options.on_event or (lambda event: None)))
    planned = dry_run_from_manifest(src, job.state, atp, options) if options.dry_run else None
    if planned is not None:  # no metadata at hand: the manifest answers, no session waits for peers
        return FetchReport(**planned)
    make_folder(dest, what="--dest", fix=_DEST_FIX)
    job.state.acquire()
    try:
        if options.hub:
            job.hub = HubSource(options.hub, endpoint=options.hub_endpoint, metadata_timeout=options.metadata_timeout,
                                sha256_only=options.hub_sha256_only)
        return _run(job)
    except NoMetadata:
        from .hubonly import fetch_by_hub_sha256

        return fetch_by_hub_sha256(job)
    finally:
        if job.hub is not None:
            job.hub.close()
        job.state.release()


def _options(options: FetchOptions | None, overrides: dict[str, Any]) -> FetchOptions:
    known = {f.name for f in dataclasses.fields(FetchOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UsageError(f"fetch() got unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                         expected=sorted(known), actual=unknown)
    return replace(options or FetchOptions(), **overrides)


def _run(job: _Job) -> FetchReport:
    options = job.options
    atp, trusted = _add_params(job)
    trackers = list(atp.trackers)
    if atp.ti is not None:
        _on_metadata(job, atp.ti, trackers)  # refuse unsafe names before the torrent is even added
    session = make_session(options.session())
    handle = session.add_torrent(atp)
    on_event = job.hub.events(options.on_event) if job.hub is not None else options.on_event
    progress = job.hub.progress(options.progress) if job.hub is not None else options.progress
    run = TorrentRun(session, handle, state=job.state, on_event=on_event, progress=progress,
                     peers=tuple(dict.fromkeys([*job.peers, *atp.peers])),
                     stall_timeout=options.stall_timeout, resume_interval=options.resume_interval, wanted=())
    run.selecting = True
    run.emit("start", source=job.source.text, infohash=job.state.infohash, dest=str(job.dest),
             trusted_resume=trusted)
    for peer in run.peers:
        handle.connect_peer(peer)
    started = time.monotonic()
    try:
        report = _download(job, run, trackers)
        if options.seeding and report.ok and not options.dry_run:
            run.serve(total=report.selected_bytes, ratio=options.seed_ratio, seconds=options.seed_time)
        uploaded = handle.status().total_payload_upload
    except BaseException:
        if run.save_resume(clean=True, timeout=15.0):
            logger.info("resume data saved to %s", job.state.resume_path)
        raise
    finally:
        session.remove_torrent(handle)
    return replace(report, seconds=round(time.monotonic() - started, 3), uploaded_bytes=uploaded,
                   extra=dict(report.extra, trusted_resume=trusted))


def _apply_selection(run: TorrentRun, job: _Job) -> None:
    """Set file priorities (selected: normal, others: skip) and wait until libtorrent has them."""
    priorities = [0] * run.handle.torrent_file().num_files()
    for f in job.selected:
        priorities[f.index] = 4
    run.select(f.index for f in job.selected)  # file_completed events for the selected files only
    run.handle.prioritize_files(priorities)
    deadline = time.monotonic() + 10.0
    while list(run.handle.get_file_priorities()) != priorities and time.monotonic() < deadline:
        run.pump(0.05)


def _select(job: _Job, run: TorrentRun, trackers: list[str]) -> FetchReport:
    """Wait for the metadata, select files, check free space: the report of what will be fetched."""
    if job.hub is not None:
        job.hub.wait_metadata(run, job.state.infohash, job.dest)  # bounded: a dead swarm has no metadata
    run.wait(lambda st: st.has_metadata)
    if not job.files:
        _on_metadata(job, run.handle.torrent_file(), trackers)
    names = {f.index: f.path for f in job.files}
    run.file_names = lambda i: names.get(i, str(i))
    return _selection(job, run.handle.torrent_file().name(), run.emit)


def _selection(job: _Job, name: str, emit: Callable[..., None]) -> FetchReport:
    """Select among ``job.files``, check free space and say so (the ``selected`` event): the report of what will
    be fetched, from a session's metadata or from the metadata at hand (a dry run, no session)."""
    options = job.options
    job.selected = select_files(job.files, include=options.include, layers=options.layers,
                                manifest=job.source.manifest)
    if options.on_selected is not None:
        job.selected = list(options.on_selected(job.files, job.selected))
    needed, free, does_not_fit = plan_space(job.dest, job.selected, dry_run=options.dry_run,
                                            free=options.free_space if options.check_space else (lambda path: 1 << 62))
    selected_bytes = sum(f.size for f in job.selected)
    root = checkpoint_root(job.files)
    emit("selected", files=len(job.selected), total_files=len(job.files), bytes=selected_bytes,
         needed=needed, free=free, torrent=str(job.state.torrent_path))
    return FetchReport(
        source=job.source.text, name=name, infohash=job.state.infohash,
        dest=str(job.dest), torrent=str(job.state.torrent_path),
        checkpoint=str(job.dest / root) if root is not None else None,
        manifest=None, files=tuple(f.to_dict() for f in job.selected), total_files=len(job.files),
        selected_bytes=selected_bytes, needed_bytes=needed, free_bytes=free, dry_run=options.dry_run,
        ok=options.dry_run and does_not_fit is None, extra={"does_not_fit": does_not_fit} if does_not_fit else {})


def _download(job: _Job, run: TorrentRun, trackers: list[str]) -> FetchReport:
    report = _select(job, run, trackers)
    if job.options.dry_run:
        return report
    manifest = job.source.manifest
    manifest_path = _write_local_manifest(job, manifest)
    completion = Completion(job.dest, job.state.infohash, run.handle.torrent_file().name(), job.selected,
                            interval=job.options.resume_interval)  # recorded incomplete before any data
    _apply_selection(run, job)
    run.handle.resume()  # added paused when the metadata was at hand (see _add_params)
    if job.hub is not None:
        job.hub.attach(run, job.files)
    if job.options.on_run is not None:
        job.options.on_run(run)
    run.selecting = False
    for peer in run.peers:  # peers that left while nothing was wanted
        run.handle.connect_peer(peer)
    # announce again, now wanting data: a magnet's first announce went out while nothing was wanted, and
    # trackers are asked again only after minutes
    run.handle.force_reannounce()
    if run.progress is not None and hasattr(run.progress, "reset"):
        run.progress.reset(total=report.selected_bytes)
    status = run.wait(lambda st: completion.poll(run) or (run.phase == "finished" and st.is_finished))
    run.save_resume(clean=True)  # flushes every written block to the files before they are verified
    completion.update(run)  # flushed, fsync-ed, then recorded complete
    fetched = status.total_payload_download - status.total_failed_bytes - status.total_redundant_bytes
    verification = _verify(job, manifest) if job.options.verify else None
    ok = verification.ok if verification is not None else True
    run.emit("verified", ok=ok, verification=verification.to_dict() if verification is not None else None)
    return replace(report, manifest=str(manifest_path) if manifest_path else None,
                   resumed_bytes=max(0, report.selected_bytes - fetched),
                   downloaded_bytes=status.total_payload_download, hash_failures=len(run.hash_failures),
                   verification=verification, ok=ok,
                   extra={"failed_pieces": sorted(set(run.hash_failures)),
                          "piece_size": run.handle.torrent_file().piece_length(),
                          **({"hub": job.hub.report(status.total_payload_download)} if job.hub else {})})
