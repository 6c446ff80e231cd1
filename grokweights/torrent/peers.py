"""Where the bytes of a torrent came from and went to: payload bytes per peer address, over every connection.

libtorrent counts the payload of each connection (``peer_info.total_download`` / ``total_upload``) and forgets
it when the connection closes. :class:`PeerBytes` keeps the figures of closed connections, so that the sums
per address stay true across reconnections (at most one poll's worth of a closing connection is missed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["PeerBytes"]


class PeerBytes:
    """Payload bytes downloaded from and uploaded to each peer address (``"ip"``), summed over connections."""

    def __init__(self) -> None:
        self._closed: dict[str, list[int]] = {}
        self._open: dict[tuple[str, int], list[int]] = {}

    def update(self, infos: Iterable[Any]) -> dict[str, list[int]]:
        """Take a ``get_peer_info()`` list; returns ``{address: [down, up]}`` for every peer seen so far."""
        current: dict[tuple[str, int], list[int]] = {}
        for info in infos:
            host, port = info.ip
            current[(str(host), int(port))] = [int(info.total_download), int(info.total_upload)]
        for key, (down, up) in self._open.items():
            if key not in current:  # the connection closed: keep what it moved
                total = self._closed.setdefault(key[0], [0, 0])
                total[0] += down
                total[1] += up
        self._open = current
        return self.totals()

    def totals(self) -> dict[str, list[int]]:
        """``{address: [down, up]}``: closed connections plus the open ones as last polled."""
        out = {host: list(total) for host, total in self._closed.items()}
        for (host, _), (down, up) in self._open.items():
            total = out.setdefault(host, [0, 0])
            total[0] += down
            total[1] += up
        return dict(sorted(out.items()))
