"""One libtorrent session configured for a few very large files, and the small parsers its options need.

Settings chosen for checkpoints of multi-GB shards (measured on loopback with libtorrent 2.1):

- outgoing connections over TCP only (uTP moved ~12 MB/s on loopback, TCP several hundred MB/s; incoming
  uTP is accepted when discovery is on) and large send buffers, so a single fast peer can fill the pipe;
- short request queues, so that many downloaders sharing one seeder (a cluster fan-out) do not ask it for
  the same pieces: each downloader asks for at most 1 s of data from a peer (``request_queue_time``), and
  at most 1 MiB from us (``max_allowed_in_request_queue``, which libtorrent peers adopt as their limit), in
  single blocks rather than runs of whole pieces (``whole_pieces_threshold`` off: libtorrent otherwise asks
  a fast peer for up to 8 MiB of adjacent pieces at once, past any queue limit). A piece asked of the seeder
  arrives well within a second, and the other downloaders see its announcement before they pick it too.
  With the earlier settings (3 s, 8 MiB runs, peers allowed 4000 requests) a swarm of 8 hosts had the seeder
  send 1.66 copies of the data; with these, 1.2. A single peer on loopback is as fast as before
  (``docs/cluster.md``);
- two hashing threads and two disk threads: hashing, not the network, is what limits a fast peer;
- the ``pread`` disk back end where the binding offers it, whose bounded buffer pool keeps the resident
  memory of the downloader flat instead of growing with the memory-mapped files (the default back end
  of libtorrent 2.x maps whole files, and the mapped pages count towards RSS as they are touched).

DHT, local peer discovery, UPnP and NAT-PMP are on by default for real use and all off with
``discovery=False`` (what tests and cluster fan-out over a private network want).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from .._sizes import parse_size
from ..errors import UsageError

__all__ = ["SessionOptions", "make_session", "add_flags", "parse_rate", "parse_endpoint", "parse_size"]

logger = logging.getLogger(__name__)

#: DHT bootstrap nodes libtorrent uses by default; only contacted when DHT is on.
_DHT_BOOTSTRAP = "dht.libtorrent.org:25401,router.bittorrent.com:6881,router.utorrent.com:6881"

#: blocks (16 KiB) a peer may have requested from us at once; libtorrent peers adopt it as their queue limit
#: (``reqq``): 1 MiB, the data of 8 Gbit/s at 1 ms or 80 Mbit/s at 100 ms of round trip
REQUESTS_IN = 64


def parse_rate(text: str | int | None) -> int | None:
    """A rate in bytes per second (units as :func:`grokweights._sizes.parse_size`); None or 0 means unlimited."""
    return parse_size(text, what="rate", zero_ok=True) or None


def parse_endpoint(text: str, *, what: str = "peer") -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into ``(host, port)``."""
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not match:
        raise UsageError(f"bad {what} address {text!r}; expected HOST:PORT, e.g. 127.0.0.1:6881",
                         expected="HOST:PORT", actual=text)
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise UsageError(f"bad {what} port in {text!r}: {port} is not in 0-65535", expected="0-65535", actual=port)
    return host, port


@dataclass(frozen=True)
class SessionOptions:
    """How the session listens, discovers peers and limits itself.

    Attributes:
        listen: ``HOST:PORT`` to listen on (port 0 picks a free one).
        discovery: DHT, local peer discovery, UPnP and NAT-PMP on (True) or all off.
        max_download_rate: bytes per second, None for unlimited.
        max_upload_rate: bytes per second, None for unlimited.
        max_connections: cap on peer connections, None for libtorrent's default.
    """

    listen: str = "0.0.0.0:6881"
    discovery: bool = True
    max_download_rate: int | None = None
    max_upload_rate: int | None = None
    max_connections: int | None = None

    def __post_init__(self) -> None:
        parse_endpoint(self.listen, what="listen")


def settings(options: SessionOptions) -> dict[str, Any]:
    """The libtorrent settings pack (a dict) for ``options``."""
    import libtorrent as lt

    host, port = parse_endpoint(options.listen, what="listen")
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    pack: dict[str, Any] = {
        "listen_interfaces": listen,
        "outgoing_interfaces": "",
        "user_agent": "grokweights",
        "alert_mask": (lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
                       | lt.alert.category_t.storage_notification | lt.alert.category_t.file_progress_notification
                       | lt.alert.category_t.peer_notification),
        # connect over TCP only: uTP is an order of magnitude slower on fast links; in a public swarm, still
        # accept peers that reach us over uTP
        "enable_outgoing_utp": False, "enable_incoming_utp": options.discovery,
        "enable_outgoing_tcp": True, "enable_incoming_tcp": True,
        # discovery
        "enable_dht": options.discovery, "enable_lsd": options.discovery,
        "enable_upnp": options.discovery, "enable_natpmp": options.discovery,
        "dht_bootstrap_nodes": _DHT_BOOTSTRAP if options.discovery else "",
        # throughput for a few large files
        "send_buffer_watermark": 16 * 1024 * 1024, "send_buffer_low_watermark": 1024 * 1024,
        "send_buffer_watermark_factor": 150,
        "max_out_request_queue": 1500, "max_peer_recv_buffer_size": 16 * 1024 * 1024,
        # many downloaders sharing one seeder (see the module docstring): a request is answered in well under
        # a second, so two hosts rarely ask the seeder for the same piece before either announces it
        "max_allowed_in_request_queue": REQUESTS_IN, "request_queue_time": 1, "whole_pieces_threshold": 0,
        "max_queued_disk_bytes": 64 * 1024 * 1024,
        "aio_threads": 2, "hashing_threads": 2, "file_pool_size": 64,
        "checking_mem_usage": 256,
        # many connections from one host (a cluster seeder, tests on loopback)
        "allow_multiple_connections_per_ip": True,
        # a peer dropped while nothing was wanted yet (before the file selection) may be retried soon
        "min_reconnect_time": 1,
        # keep a connection open when both ends have everything: libtorrent forgets a connection's byte counts
        # when it closes, and the last progress event reports what came from each peer (torrent.peers)
        "close_redundant_connections": False,
        "active_downloads": -1, "active_seeds": -1, "active_limit": -1,
        # rate limits apply to every peer, on the local network too (a cluster fan-out is local)
        "ignore_limits_on_local_network": False,
        "download_rate_limit": options.max_download_rate or 0,
        "upload_rate_limit": options.max_upload_rate or 0,
    }
    if options.max_connections:
        pack["connections_limit"] = options.max_connections
    return pack


def make_session(options: SessionOptions) -> Any:
    """A started ``libtorrent.session`` for ``options``."""
    import libtorrent as lt

    params = lt.session_params(settings(options))
    params.disk_io_constructor = "pread_disk_io_constructor"  # bounded memory; falls back to the default
    session = lt.session(params)
    logger.debug("libtorrent %s session listening on %s", lt.__version__, options.listen)
    return session


def add_flags(flags: Any, *, discovery: bool, extra: Any = 0) -> Any:
    """Torrent flags for adding a torrent: ``extra`` set, not auto-managed, not paused, and without DHT or
    local peer discovery for this torrent when ``discovery`` is off."""
    import libtorrent as lt

    flags = (flags | extra) & ~lt.torrent_flags.auto_managed & ~lt.torrent_flags.paused
    if not discovery:
        flags |= lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd
    return flags
