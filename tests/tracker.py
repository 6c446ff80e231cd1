"""A minimal HTTP BitTorrent tracker for tests, on 127.0.0.1 only (BEP 3 announces, BEP 23 compact peer lists).

Every announce is recorded (:attr:`Tracker.announces`); a peer is listed to the others of its torrent until it
announces ``event=stopped``. Peers are listed with the address they announced from (always 127.0.0.1 here)
and the port they announced.
"""

from __future__ import annotations

import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .test_torrent_helpers import bencode


class Tracker:
    """``with Tracker() as tracker:`` serves ``tracker.url`` (``http://127.0.0.1:PORT/announce``)."""

    def __init__(self) -> None:
        self.announces: list[dict[str, Any]] = []
        self._swarms: dict[bytes, dict[bytes, tuple[str, int]]] = {}
        self._lock = threading.Lock()
        tracker = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                status, body = tracker._answer(self.path, self.client_address[0])
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/announce"

    def peers_of(self, infohash: str) -> list[tuple[str, int]]:
        """The peers listed for ``infohash`` (40 hex digits) now."""
        with self._lock:
            return sorted(self._swarms.get(bytes.fromhex(infohash), {}).values())

    def _answer(self, path: str, address: str) -> tuple[int, bytes]:
        url = urlsplit(path)
        if url.path != "/announce":
            return 404, b"not found"
        query = {k: v[0] for k, v in parse_qs(url.query, encoding="latin-1").items()}
        try:
            infohash, peer_id = query["info_hash"].encode("latin-1"), query["peer_id"].encode("latin-1")
            port = int(query["port"])
        except (KeyError, ValueError):
            return 200, bencode({"failure reason": "info_hash, peer_id and port are required"})
        if len(infohash) != 20:
            return 200, bencode({"failure reason": "info_hash is not 20 bytes"})
        event = query.get("event", "")
        with self._lock:
            self.announces.append({"infohash": infohash.hex(), "peer_id": peer_id, "address": address, "port": port,
                                   "event": event, "left": int(query.get("left", -1))})
            swarm = self._swarms.setdefault(infohash, {})
            if event == "stopped":
                swarm.pop(peer_id, None)
            else:
                swarm[peer_id] = (address, port)
            others = [peer for pid, peer in swarm.items() if pid != peer_id]
        compact = b"".join(socket.inet_aton(host) + struct.pack(">H", p) for host, p in others)
        return 200, bencode({"interval": 2, "min interval": 1, "complete": len(others), "incomplete": 0,
                             "peers": compact})

    def __enter__(self) -> Tracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


def bound_addresses(port: int) -> set[str]:
    """The local addresses of every TCP and UDP socket of this machine bound to ``port`` (Linux /proc/net), in
    the kernel's hex form turned into dotted IPv4 or compressed IPv6."""
    found = set()
    for name in ("tcp", "tcp6", "udp", "udp6"):
        table = Path("/proc/net") / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local = line.split()[1]
            host, hex_port = local.split(":")
            if int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(host)
            # /proc/net prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words))
    return found
