"""BitTorrent for checkpoints: ``fetch`` (resumable, selective, verified), ``seed`` and ``create_torrent``.

libtorrent is imported only inside this package. Its modules, named after what they do:

- :mod:`.session` - one session configured for a few multi-GB files;
- :mod:`.meta` - sources, unsafe-name checks, ``.torrent`` files, magnet links;
- :mod:`.create` - making a torrent of a local folder, describing one;
- :mod:`.select` - file selection, free-space preflight, size checks;
- :mod:`.state` - lock and resume data beside the download;
- :mod:`.loop` - alerts, progress, events, stalls, serving;
- :mod:`.peers` - payload bytes from and to each peer address;
- :mod:`.fetch` and :mod:`.seed` - the two operations.
"""

from __future__ import annotations

from ..constants import FREE_SPACE_ENV
from .create import TorrentInfo, create_torrent, describe_torrent
from .fetch import FetchOptions, FetchReport, FetchVerification, fetch
from .meta import magnet_link
from .seed import Seeder, SeedReport, seed

__all__ = ["fetch", "FetchOptions", "FetchReport", "FetchVerification", "create_torrent", "describe_torrent",
           "TorrentInfo", "seed", "Seeder", "SeedReport", "magnet_link", "FREE_SPACE_ENV"]
