"""BitTorrent for checkpoints: ``fetch`` (resumable, selective, verified), ``seed`` and ``create_torrent``.

Over the libtorrent Python binding; the pieces live in small modules named after what they do:

- :mod:`grokweights.torrent_session` - one session configured for a few multi-GB files;
- :mod:`grokweights.torrent_meta` - sources, unsafe-name checks, ``.torrent`` files, magnet links;
- :mod:`grokweights.torrent_select` - file selection, free-space preflight, size checks;
- :mod:`grokweights.torrent_state` - lock and resume data beside the download;
- :mod:`grokweights.torrent_loop` - alerts, progress, events, stalls;
- :mod:`grokweights.torrent_fetch` and :mod:`grokweights.torrent_seed` - the two operations.
"""

from __future__ import annotations

from .torrent_fetch import FetchReport, fetch
from .torrent_meta import create_torrent, magnet_link
from .torrent_seed import Seeder, SeedReport, seed
from .torrent_select import FREE_SPACE_ENV

__all__ = ["fetch", "FetchReport", "create_torrent", "seed", "Seeder", "SeedReport", "magnet_link",
           "FREE_SPACE_ENV"]
