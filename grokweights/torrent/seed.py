"""``seed``: serve a local, checked copy of a checkpoint to other hosts, printing its magnet link.

The way to fan a verified copy out to every host of a cluster: one host fetches (or already has) the
checkpoint, seeds it, and every other host fetches from it by magnet link (``--peer`` for a private
network without DHT). The data is checked against the torrent first; a copy that fails is refused.

DIR may be what ``fetch --dest`` was (holding ``<infohash>.torrent`` and the torrent's top folder) or the
top folder itself; without a ``.torrent`` one is created for DIR (``DIR/<infohash>.torrent``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import TorrentError, UsageError
from .create import create_torrent
from .loop import TorrentRun, state_name
from .meta import check_info_dict, load_torrent, magnet_link
from .session import SessionOptions, add_flags, make_session, parse_endpoint

__all__ = ["Seeder", "seed", "SeedReport", "locate_torrent"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedReport:
    """What a seeding session served."""

    name: str
    infohash: str
    magnet: str
    torrent: str
    save_path: str
    listen: str
    uploaded_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def locate_torrent(directory: Path, torrent: str | os.PathLike[str] | None = None) -> tuple[Path, Path] | None:
    """``(torrent file, save path)`` for a folder: a given torrent, or one found in DIR or beside it.

    A given torrent that cannot be read raises; a found one that is not a valid torrent is skipped with a
    warning naming it (a stray or half-downloaded ``.torrent`` beside the data does not stop ``seed``).
    """
    candidates = [Path(torrent)] if torrent else sorted(directory.glob("*.torrent")) + sorted(
        directory.parent.glob("*.torrent"))
    for path in candidates:
        if torrent and not path.exists():
            raise UsageError(f"torrent file {path} does not exist", path=path)
        try:
            name = load_torrent(path).ti.name()
        except (TorrentError, UsageError) as exc:
            if torrent:
                raise
            logger.warning("skipping %s: %s", path, exc.message.removeprefix(f"{path}: "))
            continue
        if (directory / name).exists():
            return path, directory
        if directory.name == name:
            return path, directory.parent
    if torrent:
        raise UsageError(f"{directory} does not hold the files of {torrent} (top folder {name!r}): give the folder "
                         f"that holds {name!r}, or {name!r} itself", path=directory, expected=name)
    return None


class Seeder:
    """A libtorrent session serving one checked checkpoint; a context manager.

    Args:
        directory: the folder to serve (see the module docstring).
        torrent: its ``.torrent`` (default: found beside the data, or created).
        listen: ``HOST:PORT`` (port 0: any free port, see :attr:`port`).
        discovery: DHT, local peer discovery, UPnP and NAT-PMP on or off.
        peers: ``HOST:PORT`` peers to connect to.
        max_upload_rate: bytes per second (None: unlimited).
        max_connections: peer connection cap.
        on_event: called with event dicts (``state``, ``progress``, ...).
        progress: a progress sink for the check, in bytes.
    """

    def __init__(self, directory: str | os.PathLike[str], *, torrent: str | os.PathLike[str] | None = None,
                 listen: str = "0.0.0.0:6881", discovery: bool = True, peers: Iterable[str] = (),
                 max_upload_rate: int | None = None, max_connections: int | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None, progress: Any = None) -> None:
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise UsageError(f"{self.directory} is not a folder to seed", path=self.directory)
        self.options = SessionOptions(listen=listen, discovery=discovery, max_upload_rate=max_upload_rate,
                                      max_connections=max_connections)
        self.peers = tuple(parse_endpoint(p) for p in peers)
        self._torrent_arg = torrent
        self.on_event, self.progress = on_event, progress
        self.session: Any = None
        self.run: TorrentRun | None = None
        self.torrent_path: Path | None = None
        self.save_path: Path | None = None
        self.magnet = ""
        self.started = 0.0

    @property
    def port(self) -> int:
        """The port the session listens on."""
        return self.session.listen_port()

    @property
    def endpoint(self) -> tuple[str, int]:
        """``(host, port)`` the seeder can be reached at (the listen host; 127.0.0.1 for a wildcard)."""
        host = parse_endpoint(self.options.listen)[0]
        return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), self.port

    def start(self) -> Seeder:
        """Check the data against the torrent and start serving; raises :class:`TorrentError` on a bad copy."""
        import libtorrent as lt

        found = locate_torrent(self.directory, self._torrent_arg)
        if found is None:
            logger.info("no .torrent for %s: creating one", self.directory)
            found = create_torrent(self.directory), self.directory.parent
        self.torrent_path, self.save_path = found
        # the whole add_torrent_params: libtorrent puts the .torrent's trackers and web seeds there, not in .ti
        atp = load_torrent(self.torrent_path)
        ti = atp.ti
        check_info_dict(ti.info_section(), where=str(self.torrent_path))
        self.session = make_session(self.options)
        atp.save_path = str(self.save_path)
        atp.flags = add_flags(atp.flags, discovery=self.options.discovery, extra=lt.torrent_flags.upload_mode)
        handle = self.session.add_torrent(atp)
        self.run = TorrentRun(self.session, handle, state=None, on_event=self.on_event, progress=self.progress,
                              peers=self.peers)
        fs = ti.layout()
        self.run.file_names = fs.file_path
        self.run.selecting = True  # "checking" until the check is done
        try:
            self._check(ti)
        except BaseException:
            self.close()
            raise
        self.run.seeding, self.run.selecting = True, False
        host = parse_endpoint(self.options.listen)[0]
        self.magnet = magnet_link(ti, peer=None if host in ("0.0.0.0", "::") else (host, self.port),
                                  trackers=atp.trackers)
        self.started = time.monotonic()
        self.run.emit("seeding", magnet=self.magnet, torrent=str(self.torrent_path), port=self.port)
        for peer in self.peers:
            handle.connect_peer(peer)
        return self

    def _check(self, ti: Any) -> None:
        run = self.run
        status = run.wait(lambda st: state_name(st) not in ("checking", "metadata"))
        if status.is_seeding:
            return
        fs = ti.layout()
        done = run.handle.file_progress(flags=1)  # piece granularity: only verified pieces count
        bad = [fs.file_path(i) for i in range(fs.num_files())
               if done[i] < fs.file_size(i) and not fs.file_flags(i) & 1]
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise TorrentError(
            f"refusing to seed {self.save_path}: {len(bad)} file(s) missing or failing the torrent's piece hashes "
            f"({shown}); re-run `grokweights fetch` into this folder to repair it", path=str(self.save_path),
            expected=ti.total_size(), actual=status.total_wanted_done)

    def tick(self) -> Any:
        """Handle alerts once; the torrent status."""
        return self.run.tick()

    def report(self) -> SeedReport:
        status = self.run.handle.status()
        return SeedReport(name=status.name, infohash=str(status.info_hashes.v1), magnet=self.magnet,
                          torrent=str(self.torrent_path), save_path=str(self.save_path),
                          listen=f"{self.endpoint[0]}:{self.port}", uploaded_bytes=status.total_payload_upload,
                          seconds=round(time.monotonic() - self.started, 3))

    def close(self) -> None:
        """Stop serving and end the session."""
        if self.session is not None and self.run is not None and self.run.handle.is_valid():
            self.session.remove_torrent(self.run.handle)
        self.session = None

    def __enter__(self) -> Seeder:
        return self.start() if self.session is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def seed(directory: str | os.PathLike[str], *, torrent: str | os.PathLike[str] | None = None,
         listen: str = "0.0.0.0:6881", discovery: bool = True, peers: Iterable[str] = (),
         max_upload_rate: int | None = None, max_connections: int | None = None, seed_time: float | None = None,
         seed_ratio: float | None = None, on_ready: Callable[[Seeder], None] | None = None,
         on_event: Callable[[dict[str, Any]], None] | None = None, progress: Any = None) -> SeedReport:
    """Check and serve a checkpoint until ``seed_time``/``seed_ratio`` is reached or Ctrl-C.

    ``on_ready(seeder)`` is called once the check passed (``seeder.magnet``, ``seeder.port``). Other
    arguments as for :class:`Seeder`. Returns what was served.
    """
    with Seeder(directory, torrent=torrent, listen=listen, discovery=discovery, peers=peers,
                max_upload_rate=max_upload_rate, max_connections=max_connections, on_event=on_event,
                progress=progress) as seeder:
        if on_ready is not None:
            on_ready(seeder)
        seeder.run.serve(total=seeder.run.handle.torrent_file().total_size(), ratio=seed_ratio, seconds=seed_time,
                         started=seeder.started)
        return seeder.report()
