"""Stream: from a download to a resharded store in one pass, converting each shard as it becomes complete.

The one package that joins :mod:`grokweights.torrent` and :mod:`grokweights.store` (it never imports jax):

- :mod:`.worker` - :class:`ConversionWorker`: shards in, store arrays out, the index last;
- :mod:`.fetch` - :func:`fetch_and_reshard`: ``grokweights fetch --reshard``, driven by libtorrent's
  file-completed events;
- :mod:`.follow` - :func:`follow`: ``grokweights reshard --follow``, driven by a folder that fills up
  (``hf download``, rsync, a network file system).
"""

from __future__ import annotations

from .fetch import StreamReport, fetch_and_reshard
from .follow import FollowReport, follow
from .worker import ConversionWorker, open_worker

__all__ = ["fetch_and_reshard", "StreamReport", "follow", "FollowReport", "ConversionWorker", "open_worker"]
