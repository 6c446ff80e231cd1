"""The model hub as a web seed of the same torrent: a local HTTP bridge between libtorrent and the hub.

libtorrent downloads from web seeds (BEP 19) at ``URL<torrent name>/<path>`` and hashes every piece they
send against the torrent's SHA-1 piece hashes, like any peer's, before it counts; a piece that fails is
discarded and fetched elsewhere. The hub keeps the release's files at ``<repo>/resolve/<rev>/<path in
repo>`` instead, with the shards at the repository's root (``ckpt-0/tensor…``, where the torrent has
``<name>/ckpt-0/tensor…``). :class:`HubBridge` serves libtorrent's web-seed requests on 127.0.0.1 (an
ephemeral port, a random secret in its URL path) by mapping each torrent path to its hub path
(:func:`hub_paths`, an explicit table), following the hub's redirects (bounded, loops refused), passing
``Range`` through and counting the bytes.

How it answers libtorrent (which stops asking a web seed for a file after any error status):

- a file the hub lacks (404), a redirect loop, a refusal (401/403), or a file that sent a piece failing
  its hash: 404 from then on; peers serve that file;
- 429, 5xx, no answer or a body cut short: the hub is backed off (``Retry-After``, else 2 s doubling up
  to 60 s) and every request is answered 503 with ``Retry-After`` until then, while peers keep going;
  when the back-off ends the bridge is re-armed under a new URL (:meth:`HubBridge.rearm`), so libtorrent
  asks it again for the files it gave up on.
"""

from __future__ import annotations

import bisect
import hmac
import http.client
import logging
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from .hubhttp import HubFileInfo, HubHTTPError, HubRef, open_url

__all__ = ["HubBridge", "hub_paths", "is_bridge_url", "BRIDGE_PREFIX"]

logger = logging.getLogger(__name__)

#: the path every bridge URL starts with (so a saved resume file's bridge URL is recognised and dropped)
BRIDGE_PREFIX = "/grokweights-hub/"
_CHUNK = 256 * 1024
_BACKOFF_FIRST, _BACKOFF_MAX = 2.0, 60.0
#: seconds a content server's URL (where the hub redirected a file) is reused before asking the hub again
_CONTENT_TTL = 300.0


def is_bridge_url(url: str) -> bool:
    """Whether ``url`` is a bridge's (ephemeral: never saved, never reused by a later run)."""
    return url.startswith("http://127.0.0.1:") and BRIDGE_PREFIX in url


def hub_paths(paths: Iterable[str], name: str) -> dict[str, str]:
    """Torrent path -> hub path: the path below the torrent's top folder ``name`` (``<name>/ckpt-0/t`` ->
    ``ckpt-0/t``); a single-file torrent's file is its own name."""
    out = {}
    for path in paths:
        below = path[len(name) + 1:] if path.startswith(name + "/") else path
        out[path] = below
    return out


class HubBridge:
    """A web seed on 127.0.0.1 that serves a torrent's files from a hub repository.

    Args:
        ref: the repository and revision.
        token: the hub token (sent to the hub's host only), or None.
        timeout: seconds before a silent hub request is given up (then backed off).
    """

    def __init__(self, ref: HubRef, *, token: str | None = None, timeout: float = 30.0) -> None:
        self.ref, self.token, self.timeout = ref, token, timeout
        self.commit: str | None = None
        self.paths: dict[str, str] = {}
        self.infos: dict[str, HubFileInfo] = {}
        self.refused: dict[str, str] = {}  # hub path -> why it is not served from the hub
        self.errors: Counter[str] = Counter()
        self.bytes_served = 0
        self.bad_pieces: set[int] = set()
        self.generation = 1
        self.backoff_until = 0.0
        self._backoff = 0.0
        self._rearm = False
        self._lock = threading.Lock()
        self._served = bytearray()  # per piece: times the hub sent bytes of it, not yet judged (saturating)
        self._starts: list[int] = []  # torrent offsets of the files, for pieces
        self._files: list[str] = []
        self._offsets: dict[str, int] = {}
        self._piece = 1
        self._secret = secrets.token_urlsafe(16)  # in the URL: only this libtorrent session knows it
        self._content: dict[str, tuple[str, float]] = {}  # hub path -> (content URL, when it was given)
        self.resolves = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="hub-bridge", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------- set-up, state

    @property
    def url(self) -> str:
        """The web-seed URL libtorrent is given (changes with each re-arm)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}{BRIDGE_PREFIX}{self._secret}/g{self.generation}/"

    def set_layout(self, name: str, files: Iterable[tuple[str, int, int]], piece_length: int) -> None:
        """The torrent's files as ``(torrent path, offset in the torrent, size)``, and its piece length."""
        table = sorted(files, key=lambda f: f[1])
        self.paths = hub_paths((p for p, _, _ in table), name)
        self._files = [p for p, _, _ in table]
        self._starts = [o for _, o, _ in table]
        self._offsets = {p: o for p, o, _ in table}
        self._piece = max(1, piece_length)
        total = max((o + n for _, o, n in table), default=0)
        self._served = bytearray(-(-total // self._piece))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stats(self) -> dict[str, Any]:
        """Counts for the report: bytes sent to libtorrent, failing pieces it had sent bytes of, errors."""
        with self._lock:
            return {"repo": self.ref.repo, "revision": self.ref.revision, "commit": self.commit,
                    "endpoint": self.ref.endpoint, "bytes": self.bytes_served, "resolves": self.resolves,
                    "bad_pieces": sorted(self.bad_pieces), "errors": dict(self.errors),
                    "not_served": dict(sorted(self.refused.items()))}

    def rearm(self) -> tuple[str, str] | None:
        """``(old URL, new URL)`` once a back-off has ended (libtorrent gave up on files meanwhile), else None."""
        with self._lock:
            if not self._rearm or time.monotonic() < self.backoff_until:
                return None
            old = self.url
            self.generation += 1
            self._rearm = False
            return old, self.url

    def piece_failed(self, piece: int) -> bool:
        """A piece failed its hash check: whether the hub had sent bytes of it. If so it counts as the hub's,
        and a file holding the whole piece is not asked from the hub again."""
        with self._lock:
            # once the hub sent bytes of a piece, every failure of it is the hub's: the alert of a failure can
            # arrive before or after the bridge counted a second serving of the same piece
            if not 0 <= piece < len(self._served) or self._served[piece] == 0:
                return False
            self.bad_pieces.add(piece)
            first = bisect.bisect_right(self._starts, piece * self._piece) - 1
            last = bisect.bisect_right(self._starts, (piece + 1) * self._piece - 1) - 1
            if first == last and first >= 0:
                hub = self.paths[self._files[first]]
                self.refused[hub] = f"piece {piece} failed its hash check"
            return True

    def resolve_commit(self, path: str) -> str | None:
        """Pin the revision to the commit it resolves to now (``X-Repo-Commit`` of ``path``), so every file
        comes from one commit. None (and a back-off) when the hub does not answer.

        Raises:
            HubHTTPError: the repository or revision does not exist, or is closed without a token.
        """
        try:
            resp, info = open_url(self.ref.url(path), path=path, method="HEAD", token=self.token,
                                  timeout=self.timeout)
            resp.close()
        except HubHTTPError as exc:
            if exc.fatal:
                raise
            self._failed(path, exc)
            return None
        if info is not None:
            self.infos[path] = info
            self.commit = info.commit
        return self.commit

    # ------------------------------------------------------------------------------------ serving

    def _failed(self, hub_path: str, exc: HubHTTPError) -> None:
        with self._lock:
            self.errors[str(exc.status) if exc.status else "no answer" if exc.transient else "refused"] += 1
            if not exc.transient:
                self.refused.setdefault(hub_path, str(exc))
                logger.warning("hub %s: %s; peers serve this file", hub_path, exc)
                return
            self._backoff = min(_BACKOFF_MAX, self._backoff * 2 if self._backoff else _BACKOFF_FIRST)
            wait = exc.retry_after if exc.retry_after is not None else self._backoff
            self.backoff_until = max(self.backoff_until, time.monotonic() + min(wait, 600.0))
            self._rearm = True
        logger.info("hub backed off for %.0f s: %s", wait, exc)

    def _ok(self, torrent_path: str, start: int, sent: int) -> None:
        with self._lock:
            self.bytes_served += sent
            self._backoff = 0.0
            if sent and torrent_path in self._offsets:
                first = (self._offsets[torrent_path] + start) // self._piece
                last = (self._offsets[torrent_path] + start + sent - 1) // self._piece
                for piece in range(first, min(last + 1, len(self._served))):
                    self._served[piece] = min(255, self._served[piece] + 1)

    def waiting(self) -> float:
        """Seconds left of the current back-off (0: none)."""
        return max(0.0, self.backoff_until - time.monotonic())

    def serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answer one web-seed request of libtorrent."""
        secret, _, rest = unquote(handler.path.split("?")[0]).removeprefix(BRIDGE_PREFIX).partition("/")
        if not hmac.compare_digest(secret.encode(), self._secret.encode()):  # another local process: nothing
            return _empty(handler, 403)
        torrent_path = rest.partition("/")[2]
        hub_path = self.paths.get(torrent_path)
        if hub_path is None or hub_path in self.refused:
            return _empty(handler, 404)
        if self.waiting() > 0:
            return _empty(handler, 503, {"Retry-After": str(math.ceil(self.waiting()))})
        sent_headers = {"Range": handler.headers["Range"]} if handler.headers.get("Range") else {}
        try:
            resp, info = self._open(hub_path, method, sent_headers)
        except HubHTTPError as exc:
            self._failed(hub_path, exc)
            if exc.transient:
                return _empty(handler, 503, {"Retry-After": str(max(1, math.ceil(self.waiting())))})
            return _empty(handler, 404)
        if info is not None:
            self.infos.setdefault(hub_path, info)
        with resp:
            if sent_headers and resp.status != 206:
                self._failed(hub_path, HubHTTPError(f"{hub_path}: the hub ignored Range (HTTP {resp.status})"))
                return _empty(handler, 404)
            length = int(resp.getheader("Content-Length") or -1)
            handler.send_response(resp.status)
            for key in ("Content-Range", "Content-Length", "Content-Type"):
                if resp.getheader(key):
                    handler.send_header(key, resp.getheader(key))
            if length < 0:  # no length to tell libtorrent where the body ends: the end of the connection does
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()
            if method == "HEAD":
                return None
            self._relay(handler, resp, torrent_path, hub_path, length)
        return None

    def _open(self, hub_path: str, method: str, headers: dict[str, str]) -> tuple[Any, HubFileInfo | None]:
        """The hub's answer for ``hub_path``: from the content server it last redirected to while that is
        fresh (one request instead of two), else through the hub's resolve URL."""
        host = urlsplit(self.ref.endpoint).netloc
        cached = self._content.get(hub_path)
        if cached is not None and time.monotonic() - cached[1] < _CONTENT_TTL:
            try:
                return open_url(cached[0], path=hub_path, method=method, headers=headers, token=self.token,
                                token_host=host, timeout=self.timeout)
            except HubHTTPError as exc:
                if exc.transient:
                    raise
                self._content.pop(hub_path, None)  # expired or moved: ask the hub again
        self.resolves += 1
        resp, info = open_url(self.ref.url(hub_path, self.commit or self.ref.revision), path=hub_path,
                              method=method, headers=headers, token=self.token, token_host=host, timeout=self.timeout)
        if resp.final_url != self.ref.url(hub_path, self.commit or self.ref.revision):
            self._content[hub_path] = (resp.final_url, time.monotonic())
        return resp, info

    def _relay(self, handler: BaseHTTPRequestHandler, resp: Any, torrent_path: str, hub_path: str,
               length: int) -> None:
        start = _range_start(resp.getheader("Content-Range"))
        sent = 0
        try:
            while length < 0 or sent < length:
                block = resp.read(_CHUNK if length < 0 else min(_CHUNK, length - sent))
                if not block:
                    break
                handler.wfile.write(block)
                sent += len(block)
        except (OSError, http.client.HTTPException) as exc:  # the hub went away mid-body, or libtorrent hung up
            handler.close_connection = True
            if not isinstance(exc, (BrokenPipeError, ConnectionResetError)) or sent == 0:
                self._failed(hub_path, HubHTTPError(f"{hub_path}: {exc}", transient=True))
            self._ok(torrent_path, start, sent)
            return
        if 0 <= length != sent:
            handler.close_connection = True
            self._failed(hub_path, HubHTTPError(f"{hub_path}: body cut short at {sent:,} of {length:,} bytes",
                                                transient=True))
        self._ok(torrent_path, start, sent)


def _range_start(content_range: str | None) -> int:
    if not content_range:
        return 0
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return 0


def _empty(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def _handler(bridge: HubBridge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: libtorrent pipelines its requests on one connection

        def log_message(self, *args: Any) -> None:
            logger.debug("hub bridge: " + args[0], *args[1:])

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            bridge.serve(self, "GET")

        def do_HEAD(self) -> None:  # noqa: N802
            bridge.serve(self, "HEAD")

    return Handler
