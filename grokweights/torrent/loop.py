"""The alert/poll loop around one torrent handle: states, progress, hash failures, resume data, stalls.

:class:`TorrentRun` is shared by ``fetch`` (metadata, checking, downloading, seeding afterwards) and
``seed``. It turns libtorrent alerts into events (plain dicts handed to ``on_event``) and into a bytes
progress bar, saves resume data every ``resume_interval`` seconds, and raises :class:`TorrentError` on a
torrent or file error, or when nothing moves for ``stall_timeout`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import TorrentError
from .peers import PeerBytes
from .state import DownloadState

__all__ = ["TorrentRun", "state_name", "emit_event"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]


def emit_event(on_event: Callable[[Event], None], event: str, **fields: Any) -> None:
    """Hand ``on_event`` the event dict: its name, the time, its fields (every fetch event has this shape)."""
    on_event({"event": event, "time": round(time.time(), 3), **fields})


def state_name(status: Any) -> str:
    """``metadata``, ``checking``, ``downloading`` or ``finished`` for a ``torrent_status``."""
    import libtorrent as lt

    s = status.state
    if s == lt.torrent_status.downloading_metadata:
        return "metadata"
    if s in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data,
             lt.torrent_status.queued_for_checking, lt.torrent_status.allocating):
        return "checking"
    if s == lt.torrent_status.downloading and not status.is_finished:
        return "downloading"
    return "finished"


class TorrentRun:
    """Drive one torrent: pump alerts, report, save resume data, detect stalls.

    Args:
        session: the libtorrent session.
        handle: the torrent's handle.
        state: its bookkeeping files (None: no resume data, e.g. a seeder).
        on_event: called with each event dict.
        progress: a progress sink (``update``; ``reset``/``set_description``/``set_postfix_str`` if it has them).
        peers: endpoints to (re)connect to while there are no peers.
        stall_timeout: seconds without progress before giving up (None: wait forever).
        resume_interval: seconds between resume-data saves.
        wanted: indices of the files whose completion is reported (``file_completed`` events); None: every
            file. libtorrent also completes files nobody selected (pieces shared with selected neighbours, or
            files already whole); those are not reported. See :meth:`select`.
    """

    def __init__(self, session: Any, handle: Any, *, state: DownloadState | None,
                 on_event: Callable[[Event], None] | None = None, progress: Any = None,
                 peers: tuple[tuple[str, int], ...] = (), stall_timeout: float | None = None,
                 resume_interval: float = 30.0, wanted: Iterable[int] | None = None) -> None:
        self.session, self.handle, self.state = session, handle, state
        self.on_event = on_event or (lambda event: None)
        self.progress = progress
        self.peers = peers
        self.stall_timeout = stall_timeout
        self.resume_interval = resume_interval
        self.hash_failures: list[int] = []
        self.completed_files: list[int] = []
        self.wanted: set[int] | None = None if wanted is None else set(wanted)
        self._reported: set[int] = set()
        self._flushes = 0
        self.metadata_received = False
        self.phase = ""
        self.seeding = False
        #: True until ``fetch`` has applied its file selection (a torrent wanting nothing looks finished)
        self.selecting = False
        self._pending_saves = 0
        self._clean_save = False
        self._last_save = time.monotonic()
        self._last_move = time.monotonic()
        self._last_mark: tuple[Any, ...] = ()
        self._done_high = 0
        #: ``(host, port)`` of peers libtorrent banned (hash failures): not dialled again
        self.banned: set[tuple[str, int]] = set()
        self._filtered: set[str] = set()
        self._last_connect = 0.0
        self._last_tick = 0.0
        self._bar_done = 0
        self.file_names: Callable[[int], str] = str
        self.peer_bytes = PeerBytes()

    def emit(self, event: str, **fields: Any) -> None:
        emit_event(self.on_event, event, **fields)

    # ----------------------------------------------------------------------------------------- alerts

    def pump(self, timeout: float = 0.25) -> None:
        """Wait up to ``timeout`` seconds for alerts and handle them."""
        import libtorrent as lt

        self.session.wait_for_alert(int(timeout * 1000))
        for alert in self.session.pop_alerts():
            if isinstance(alert, lt.hash_failed_alert):
                self.hash_failures.append(alert.piece_index)
                logger.warning("piece %d failed its hash check; fetching it again from other peers",
                               alert.piece_index)
                self.emit("hash_failed", piece=alert.piece_index, failures=len(self.hash_failures))
            elif isinstance(alert, lt.file_completed_alert):
                self.completed_files.append(alert.index)
                self._report_completed(alert.index)
            elif isinstance(alert, lt.metadata_received_alert):
                self.metadata_received = True
            elif isinstance(alert, lt.cache_flushed_alert):
                self._flushes += 1
            elif isinstance(alert, lt.save_resume_data_alert):
                self._pending_saves -= 1
                if self.state is not None:
                    self.state.save_resume(alert.params, clean=self._clean_save)
            elif isinstance(alert, lt.save_resume_data_failed_alert):
                self._pending_saves -= 1
                logger.info("resume data not saved: %s", alert.message())
            elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                raise TorrentError(f"torrent {self.handle.status().name or ''}: {alert.message()}",
                                   actual=alert.message())
            elif isinstance(alert, (lt.peer_disconnected_alert, lt.peer_error_alert, lt.peer_connect_alert)):
                logger.debug("%s", alert.message())
            elif isinstance(alert, lt.peer_ban_alert):
                self._ban(_endpoint(alert.endpoint))
                self.emit("peer_banned", peer=str(alert.endpoint))

    def _ban(self, peer: tuple[str, int]) -> None:
        """Keep a peer libtorrent banned (corrupt data) banned: never dialled again, and its address refused
        altogether (it would come back from another port) unless a peer we were given shares that address."""
        import libtorrent as lt

        self.banned.add(peer)
        others = {_endpoint(p)[0] for p in self.peers if _endpoint(p) not in self.banned}
        if peer[0] in others or peer[0] in self._filtered:
            return
        self._filtered.add(peer[0])
        rules = lt.ip_filter()
        for host in self._filtered:
            rules.add_rule(host, host, 1)  # 1: blocked
        self.session.set_ip_filter(rules)
        logger.warning("peer %s sent corrupt data: banned, its address blocked for this download", peer[0])

    def select(self, indices: Iterable[int]) -> None:
        """Report completion for these files only, including those that completed before they were selected."""
        self.wanted = set(indices)
        for index in dict.fromkeys(self.completed_files):
            self._report_completed(index)

    def _report_completed(self, index: int) -> None:
        if index in self._reported or (self.wanted is not None and index not in self.wanted):
            return
        self._reported.add(index)
        self.emit("file_completed", index=index, path=self.file_names(index))

    @property
    def flushes(self) -> int:
        """How many cache flushes libtorrent has confirmed so far (to wait for one without blocking)."""
        return self._flushes

    def flush(self, timeout: float = 60.0) -> bool:
        """Write out what libtorrent still buffers for this torrent and wait for it; whether it was confirmed."""
        self.pump(0)
        before = self._flushes
        self.handle.flush_cache()
        deadline = time.monotonic() + timeout
        while self._flushes == before and time.monotonic() < deadline:
            self.pump(0.1)
        return self._flushes > before

    # --------------------------------------------------------------------------------------- resume

    def save_resume(self, *, clean: bool = False, timeout: float = 30.0) -> bool:
        """Flush the disk cache and save resume data; waits for it. Returns whether it was saved."""
        import libtorrent as lt

        if self.state is None or not self.handle.is_valid() or not self.handle.status().has_metadata:
            return False
        self._clean_save = clean
        self._pending_saves += 1
        self.handle.save_resume_data(lt.torrent_handle.flush_disk_cache | lt.torrent_handle.save_info_dict)
        deadline = time.monotonic() + timeout
        while self._pending_saves > 0 and time.monotonic() < deadline:
            self.pump(0.1)
        self._last_save = time.monotonic()
        return self._pending_saves <= 0

    # ------------------------------------------------------------------------------------------ ticks

    def tick(self) -> Any:
        """Pump alerts once, report, reconnect, save resume data when due, check for stalls; the status."""
        self.pump()
        status = self.handle.status()
        now = time.monotonic()
        phase = state_name(status)
        if phase == "finished" and self.seeding:
            phase = "seeding"
        elif phase == "finished" and self.selecting:
            phase = "checking"  # nothing is wanted until the file selection is applied
        if phase != self.phase:
            self.phase = phase
            self._last_tick = 0.0  # a progress event right away: the figures at the change of state
            self.emit("state", state=phase)
            if self.progress is not None and hasattr(self.progress, "set_description"):
                self.progress.set_description(phase)
        self._report(status, now)
        if self.peers and status.num_peers == 0 and now - self._last_connect > 1.0:
            self._last_connect = now
            for peer in self.peers:
                if _endpoint(peer) not in self.banned:  # a peer banned for corrupt data stays banned
                    self.handle.connect_peer(peer)
        if (self.state is not None and now - self._last_save > self.resume_interval
                and status.has_metadata and self.handle.need_save_resume_data()):
            self.save_resume()
        self._check_stall(status, now)
        return status

    def _report(self, status: Any, now: float) -> None:
        done = status.total_wanted_done
        if self.progress is not None:
            if done < self._bar_done and hasattr(self.progress, "reset"):
                self.progress.reset(total=status.total_wanted)
                self._bar_done = 0
            if done > self._bar_done:
                self.progress.update(done - self._bar_done)
                self._bar_done = done
            if hasattr(self.progress, "set_postfix_str"):
                self.progress.set_postfix_str(f"{status.num_peers} peers ({status.num_seeds} seeds)")
        if now - self._last_tick >= 1.0:
            self._last_tick = now
            self.emit("progress", state=self.phase, done=done, wanted=status.total_wanted,
                      downloaded=status.total_payload_download, uploaded=status.total_payload_upload,
                      download_rate=status.download_payload_rate, upload_rate=status.upload_payload_rate,
                      peers=status.num_peers, seeds=status.num_seeds, hash_failures=len(self.hash_failures),
                      by_peer=self.peer_bytes.update(self.handle.get_peer_info()))

    def _check_stall(self, status: Any, now: float) -> None:
        # progress is verified data: bytes that fail their hash are taken back (total_wanted_done falls), so
        # only a new high-water mark counts, and pieces passed; a peer sending corrupt data does not move it
        self._done_high = max(self._done_high, status.total_wanted_done)
        mark = (self._done_high, status.num_pieces, status.has_metadata, status.state, status.total_payload_upload)
        if mark != self._last_mark:
            self._last_mark = mark
            self._last_move = now
        elif self.stall_timeout is not None and now - self._last_move > self.stall_timeout:
            what = "no metadata" if not status.has_metadata else f"{status.total_wanted_done:,} bytes done"
            raise TorrentError(
                f"torrent {status.name or str(status.info_hashes.v1)}: no progress for {self.stall_timeout:g} s "
                f"({what}, {status.num_peers} peers); check --peer addresses, add a --web-seed mirror, or raise "
                "the stall timeout", expected="progress", actual=what)

    def serve(self, *, total: int, ratio: float | None = None, seconds: float | None = None,
              started: float | None = None) -> None:
        """Keep serving (no stall limit) until uploaded bytes reach ``ratio * total``, ``seconds`` have passed
        since ``started`` (default: now), or Ctrl-C."""
        self.stall_timeout = None
        self.seeding = True
        started = time.monotonic() if started is None else started
        try:
            while True:
                status = self.tick()
                if ratio is not None and status.total_payload_upload >= ratio * max(total, 1):
                    return
                if seconds is not None and time.monotonic() - started >= seconds:
                    return
        except KeyboardInterrupt:
            logger.info("stopped seeding")

    def wait(self, done: Callable[[Any], bool]) -> Any:
        """Tick until ``done(status)``; returns the last status."""
        while True:
            status = self.tick()
            if done(status):
                return status


def _endpoint(peer: Any) -> tuple[str, int]:
    """``(host, port)`` of a peer given as a tuple or a libtorrent endpoint."""
    host, port = tuple(peer)[:2]
    return str(host), int(port)
