"""``fetch --hub``: the hub's files as a second source of the same torrent, and its sha256 as a second provenance.

:class:`HubSource` ties a :class:`~grokweights.torrent.hubseed.HubBridge` to one fetch: once the metadata is
known it maps the torrent's files to the hub's paths, pins the revision to a commit and gives libtorrent the
bridge as a web seed; it tags each hash failure with the source that sent the piece, adds the bytes from
the hub and from peers to the ``progress`` events, re-arms the bridge after a back-off, and after the
download checks the hub's LFS sha256 of each shard against the sha256 taken in the read that proved the
shard by the torrent's pieces (pinned with both provenances when they agree, a problem when not).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import TorrentError
from .hubhttp import HubFileInfo, HubHTTPError, HubRef, hub_token, open_url, parse_hub
from .hubseed import HubBridge

__all__ = ["HubSource", "NoMetadata", "METADATA_TIMEOUT"]

logger = logging.getLogger(__name__)

#: seconds a ``--hub`` fetch waits for the torrent's metadata from peers before it gives up
METADATA_TIMEOUT = 60.0
#: seconds libtorrent waits before asking a web seed again after an error (its default, 30 s, is long
#: when a file the hub lacks is answered 404 at once)
_URLSEED_RETRY = 3


class NoMetadata(Exception):
    """No peer gave the metadata in time and the user asked for the hub's sha256 alone."""


def metadata_help(infohash: str, dest: Any, waited: float) -> str:
    return (f"torrent {infohash}: no metadata from peers within {waited:g} s, and the hub serves files, not "
            f"the torrent's piece hashes: give the release's .torrent with --torrent FILE (or put it at "
            f"{dest}/{infohash}.torrent; `grokweights fetch` saves it there whenever a peer sends it), or add "
            "--hub-sha256-only to download from the hub checked by its sha256 alone")


class HubSource:
    """The hub side of one fetch.

    Args:
        text: ``OWNER/NAME[@REVISION]``.
        endpoint: the hub (default ``HF_ENDPOINT``, else the public hub).
        metadata_timeout: seconds to wait for metadata from peers.
        sha256_only: on a metadata timeout, fall back to a download by the hub's sha256 alone.
    """

    def __init__(self, text: str, *, endpoint: str | None = None, metadata_timeout: float = METADATA_TIMEOUT,
                 sha256_only: bool = False) -> None:
        self.ref: HubRef = parse_hub(text, endpoint=endpoint)
        self.token = hub_token()
        self.metadata_timeout = metadata_timeout
        self.sha256_only = sha256_only
        self.bridge: HubBridge | None = None
        self.handle: Any = None
        self.commit: str | None = None
        self.pinned: dict[str, str] = {}
        self.unpinned: list[str] = []

    def close(self) -> None:
        if self.bridge is not None:
            self.bridge.close()

    # ------------------------------------------------------------------------------------ download

    def wait_metadata(self, run: Any, infohash: str, dest: Any) -> None:
        """Wait for the metadata (at once when it is at hand); bounded, as the hub cannot give it."""
        started = time.monotonic()
        status = run.wait(lambda st: st.has_metadata or time.monotonic() - started > self.metadata_timeout)
        if status.has_metadata:
            return
        if self.sha256_only:
            raise NoMetadata(infohash)
        raise TorrentError(metadata_help(infohash, dest, self.metadata_timeout), path=str(dest),
                           expected="the torrent's metadata", actual="none from peers")

    def attach(self, run: Any, files: list[Any]) -> None:
        """Serve the torrent's files from the hub beside the peers (call once the metadata is known)."""
        ti = run.handle.torrent_file()
        layout = ti.layout() if hasattr(ti, "layout") else ti.files()
        table = [(f.path, layout.file_offset(f.index), f.size) for f in files]
        self.bridge = HubBridge(self.ref, token=self.token)
        self.bridge.set_layout(ti.name(), table, ti.piece_length())
        first = next((self.bridge.paths[f.path] for f in files if f.shard), None)
        try:
            commit = self.bridge.resolve_commit(first) if first is not None else None
        except HubHTTPError as exc:
            raise TorrentError(f"hub {self.ref} at {self.ref.endpoint}: {exc}; check --hub OWNER/NAME[@REVISION], "
                               "and HF_TOKEN for a gated or private repository", path=str(self.ref),
                               actual=str(exc)) from None
        if commit:
            self.commit = self.bridge.commit
            logger.info("hub %s resolves to commit %s", self.ref, self.commit)
        run.session.apply_settings({"urlseed_wait_retry": _URLSEED_RETRY})
        self.handle = run.handle
        self.handle.add_url_seed(self.bridge.url)

    def events(self, sink: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
        """``sink`` with hub facts added: the source of each failing piece, hub and peer bytes in progress."""
        sink = sink or (lambda event: None)

        def on_event(event: dict[str, Any]) -> None:
            bridge = self.bridge
            if bridge is not None and event["event"] == "hash_failed":
                event["source"] = "hub" if bridge.piece_failed(event["piece"]) else "peer"
            elif bridge is not None and event["event"] == "progress":
                self._tick(bridge)
                event.update(self.bytes(event["downloaded"]))
            sink(event)

        return on_event

    def progress(self, bar: Any) -> Any:
        """``bar`` with the hub's bytes added to its status text (``2 peers (1 seeds), hub 1.2 GB``)."""
        return None if bar is None else _HubBar(bar, self)

    def _tick(self, bridge: HubBridge) -> None:
        swap = bridge.rearm()
        if swap is not None and self.handle is not None:
            self.handle.remove_url_seed(swap[0])
            self.handle.add_url_seed(swap[1])
            logger.info("hub back-off over: asking it again")

    def bytes(self, downloaded: int) -> dict[str, int]:
        """Payload bytes from the hub and from peers (libtorrent's total minus the hub's)."""
        hub = self.bridge.bytes_served if self.bridge is not None else 0
        return {"hub_bytes": hub, "peer_bytes": max(0, downloaded - hub)}

    def report(self, downloaded: int) -> dict[str, Any]:
        out = self.bridge.stats() if self.bridge is not None else {"repo": self.ref.repo,
                                                                   "revision": self.ref.revision}
        out.update(self.bytes(downloaded), sha256_pinned=len(self.pinned), sha256_unpinned=self.unpinned)
        return out

    # ---------------------------------------------------------------------------------- provenance

    def infos(self, paths: list[str], workers: int = 8) -> dict[str, HubFileInfo]:
        """The hub's LFS facts of these repository paths (from the bridge's answers, else one HEAD each)."""
        known = dict(self.bridge.infos) if self.bridge is not None else {}
        commit = self.commit

        def head(path: str) -> tuple[str, HubFileInfo | None]:
            for attempt in range(3):  # a busy hub (429, 5xx) is asked again after a pause
                try:
                    resp, info = open_url(self.ref.url(path, commit), path=path, method="HEAD", token=self.token)
                    resp.close()
                    return path, info
                except HubHTTPError as exc:
                    logger.info("hub %s: %s", path, exc)
                    if not exc.transient or attempt == 2:
                        break
                    time.sleep(min(exc.retry_after or 2.0 * (attempt + 1), 30.0))
            return path, None

        todo = [p for p in paths if p not in known]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for path, info in pool.map(head, todo):
                if info is not None:
                    known[path] = info
        return known

    @property
    def source(self) -> str:
        """The provenance of a pinned hub sha256: ``hub:<repo>@<commit>``."""
        return f"hub:{self.ref.repo}@{self.commit or self.ref.revision}"

    def resolve_commit_of(self, path: str) -> str | None:
        """The commit the revision resolves to, from ``path``'s resolve answer (``X-Repo-Commit``).

        Raises:
            TorrentError: the hub does not answer, or has no such repository, revision or file.
        """
        try:
            resp, info = open_url(self.ref.url(path), path=path, method="HEAD", token=self.token)
            resp.close()
        except HubHTTPError as exc:
            raise TorrentError(f"hub {self.ref}: {exc}", path=path) from None
        self.commit = info.commit if info is not None else None
        return self.commit

    def cross_check(self, proven: dict[str, str], hub_path: Callable[[str], str]) -> tuple[dict[str, str], list]:
        """The shards whose hub sha256 equals the torrent-proven one (to pin with the hub's provenance too),
        and a problem for each that differs; shards the hub has no LFS sha256 for are listed as unpinned."""
        infos = self.infos([hub_path(p) for p in proven])
        agree, problems = {}, []
        for path, sha in sorted(proven.items()):
            info = infos.get(hub_path(path))
            if info is None or info.sha256 is None:
                self.unpinned.append(path)
            elif info.sha256 == sha:
                agree[path] = sha
            else:
                problems.append({"path": path, "status": "hub_sha256_differs", "expected": sha,
                                 "actual": info.sha256})
        self.pinned = agree
        return agree, problems


class _HubBar:
    """A progress sink whose status text also names the bytes from the hub; all else goes to ``bar``."""

    def __init__(self, bar: Any, hub: HubSource) -> None:
        self._bar, self._hub = bar, hub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)

    def set_postfix_str(self, text: str = "", *args: Any, **kwargs: Any) -> None:
        sent = self._hub.bridge.bytes_served if self._hub.bridge is not None else 0
        if hasattr(self._bar, "set_postfix_str"):
            self._bar.set_postfix_str(f"{text}, hub {sent / 1e9:.2f} GB" if sent else text, *args, **kwargs)
