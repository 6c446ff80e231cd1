"""A local stand-in for the model hub's HTTP API, serving a small synthetic repository.

The responses follow the hub's documented format, as huggingface_hub reads it:

- ``GET /api/models/{repo}/revision/{rev}``: the repository's info, ``sha`` being the commit;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..&expand=..``: a JSON list of entries
  ``{"type": "file", "oid": <git blob id>, "size": n, "path": p, "lfs": {"oid": <sha256>, "size": n,
  "pointerSize": 134}}`` or ``{"type": "directory", "oid": .., "size": 0, "path": p}``; with ``expand``
  also ``lastCommit`` and ``securityFileStatus``; paginated with a ``Link: <url>; rel="next"`` header;
- an unknown repository or revision: 404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound``;
- ``HEAD`` / ``GET /{repo}/resolve/{rev}/{path}`` (with ``files=``): a 302 to a content path, carrying
  ``X-Repo-Commit``, ``X-Linked-Etag`` (the LFS sha256, quoted), ``X-Linked-Size`` and ``ETag``; an
  unknown file 404 ``EntryNotFound``; the content path answers ``Range: bytes=a-b`` / ``bytes=a-`` with 206.

Faults for the tests, settable while serving: ``corrupt`` (bytes flipped in what is served),
``loop`` (resolve redirects in a circle), ``token`` (a gated repository), ``etag`` (another sha256
listed), ``busy`` (statuses answered to the next resolve requests, with ``Retry-After``), ``rate`` (bytes
per second, all connections together), :meth:`FakeHub.vanish` (the hub goes away, in-flight bodies cut).
``python -m tests.fakehub ROOT --repo R [--rate N]`` serves a folder from its own process and prints its
URL (for the benchmark).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlparse

COMMIT = "3f1c0b9d2e4a5f60718293a4b5c6d7e8f9012345"
PAGE = 2  # entries per page: small, so that pagination is exercised
ENDLESS_PAGE = 1000  # entries per page of a listing that never ends (FakeHub.endless)


def lfs_entry(path: str, data_or_sha: bytes | str, size: int | None = None) -> dict:
    """A tree entry for an LFS file (sha256 of ``data``, or the given sha256 and size)."""
    if isinstance(data_or_sha, bytes):
        sha, size = hashlib.sha256(data_or_sha).hexdigest(), len(data_or_sha)
    else:
        sha = data_or_sha
    blob = hashlib.sha1(f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n".encode())
    return {"type": "file", "oid": blob.hexdigest(), "size": size, "path": path,
            "lfs": {"oid": sha, "size": size, "pointerSize": 134}}


def repo_from_folder(root: Path) -> list[dict]:
    """Tree entries for every file under ``root`` (as LFS files), plus their folders and a git README."""
    entries = [{"type": "file", "oid": "a" * 40, "size": 12, "path": "README.md"}]
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file()} - {root}):
        entries.append({"type": "directory", "oid": "b" * 40, "size": 0, "path": folder.relative_to(root).as_posix()})
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        entries.append(lfs_entry(path.relative_to(root).as_posix(), path.read_bytes()))
    return entries


class FakeHub:
    """``with FakeHub({"org/repo": entries}) as hub:`` serves them at ``hub.url``."""

    def __init__(self, repos: dict[str, list[dict]], files: dict[str, Path] | None = None,
                 rate: float | None = None) -> None:
        self.repos = repos
        self.files = {repo: Path(root) for repo, root in (files or {}).items()}
        self.requests: list[str] = []
        self.corrupt: dict[str, set[int]] = {}  # path in the repository -> offsets of bytes flipped when served
        self.loop: set[str] = set()  # paths whose resolve redirects in a circle
        self.etag: dict[str, str] = {}  # path -> the LFS sha256 announced instead of the file's own
        self.token: str | None = None  # a gated repository: resolve answers 401 without this bearer token
        self.busy: list[tuple[int, int]] = []  # (status, Retry-After) for the next resolve requests
        self.rate = rate
        self.gone = False
        self.endless = False  # the tree listing never ends: every page links to another of new files
        self.content_bytes = 0
        self.auth: list[tuple[str, str | None]] = []  # (path, Authorization header) of each file request
        self._lock = threading.Lock()
        self._next = 0.0
        self._sha: dict[Path, str] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
                hub.requests.append("HEAD " + self.path)
                hub.auth.append((self.path, self.headers.get("Authorization")))
                hub.serve_file(self, head=True)

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                hub.requests.append(self.path)
                if not self.path.startswith("/api/"):
                    hub.auth.append((self.path, self.headers.get("Authorization")))
                    return hub.serve_file(self, head=False)
                status, body, headers = hub.respond(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.gone:
            self.server.shutdown()
            self.server.server_close()

    def vanish(self) -> None:
        """The hub goes away: no new connection is accepted and bodies being sent are cut."""
        self.gone = True
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------------------ file downloads

    def sha256(self, path: Path) -> str:
        if path not in self._sha:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            self._sha[path] = h.hexdigest()
        return self._sha[path]

    def serve_file(self, handler: BaseHTTPRequestHandler, *, head: bool) -> None:
        url = urlparse(handler.path)
        parts = unquote(url.path).lstrip("/").split("/")
        if len(parts) >= 4 and parts[2] == "content":
            return self._content("/".join(parts[:2]), "/".join(parts[3:]), handler, head)
        if len(parts) >= 4 and parts[2] == "loop":
            other = "b" if parts[3] == "a" else "a"
            return _answer(handler, 302, {"Location": f"/{parts[0]}/{parts[1]}/loop/{other}"})
        if len(parts) < 5 or parts[2] != "resolve" or "/".join(parts[:2]) not in self.files:
            return _answer(handler, 404, {"X-Error-Code": "RepoNotFound"})
        repo, rev, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if self.busy:
            status, wait = self.busy.pop(0)
            return _answer(handler, status, {"Retry-After": str(wait)})
        if self.token and handler.headers.get("Authorization") != f"Bearer {self.token}":
            return _answer(handler, 401, {"X-Error-Code": "GatedRepo"})
        if rev not in ("main", COMMIT):
            return _answer(handler, 404, {"X-Error-Code": "RevisionNotFound"})
        local = self.files[repo] / path
        if ".." in parts or not local.is_file():
            return _answer(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        if path in self.loop:
            return _answer(handler, 302, {"Location": f"/{repo}/loop/a", "X-Repo-Commit": COMMIT})
        sha = self.etag.get(path) or self.sha256(local)
        return _answer(handler, 302, {
            # another host name than the endpoint's, as the hub's content servers are: no token goes there
            "Location": f"{self.url.replace('127.0.0.1', 'localhost')}/{repo}/content/{quote(path)}?expires=1",
            "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(local.stat().st_size),
            "ETag": f'"{sha}"'})

    def _content(self, repo: str, path: str, handler: BaseHTTPRequestHandler, head: bool) -> None:
        local = self.files.get(repo, Path("/nonexistent")) / path
        if not local.is_file():
            return _answer(handler, 404, {})
        size = local.stat().st_size
        spec = handler.headers.get("Range")
        start, end = 0, size - 1
        if spec:
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start, end = (int(first), min(int(last), size - 1) if last else size - 1) if first else \
                (size - int(last), size - 1)
        handler.send_response(206 if spec else 200)
        handler.send_header("Content-Length", str(end - start + 1))
        if spec:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        handler.end_headers()
        if head:
            return None
        flips = sorted(self.corrupt.get(path, ()))
        with open(local, "rb") as f:
            f.seek(start)
            pos = start
            while pos <= end:
                block = bytearray(f.read(min(64 * 1024, end + 1 - pos)))
                for flip in flips:
                    if pos <= flip < pos + len(block):
                        block[flip - pos] ^= 0xFF
                self._pace(len(block))
                if self.gone:
                    handler.close_connection = True
                    return None
                handler.wfile.write(block)
                pos += len(block)
                self.content_bytes += len(block)
        return None

    def _pace(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + n / self.rate
            wait = self._next - n / self.rate - now
        if wait > 0:
            time.sleep(wait)

    def respond(self, raw: str) -> tuple[int, object, dict]:
        url = urlparse(raw)
        query = parse_qs(url.query)
        for repo, entries in self.repos.items():
            prefix = f"/api/models/{repo}/"
            if url.path == prefix[:-1]:  # no revision given: the default branch
                return 200, self._info(repo, entries), {}
            if not url.path.startswith(prefix):
                continue
            kind, _, rest = url.path[len(prefix):].partition("/")
            revision = rest.split("/")[0]
            if revision not in ("main", COMMIT):
                return 404, {"error": "Invalid rev id: " + revision}, {"X-Error-Code": "RevisionNotFound"}
            if kind == "revision":
                return 200, self._info(repo, entries), {}
            if kind == "tree":
                return self._tree(url, query, entries)
        return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}

    @staticmethod
    def _info(repo: str, entries: list[dict]) -> dict:
        return {"id": repo, "sha": COMMIT, "private": False,
                "siblings": [{"rfilename": e["path"]} for e in entries if e["type"] == "file"]}

    def _tree(self, url, query, entries) -> tuple[int, object, dict]:
        expand = query.get("expand", ["False"])[0].lower() == "true"
        start = int(query.get("cursor", ["0"])[0])
        rest = "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "cursor")
        if self.endless:
            page = [{"type": "file", "oid": "c" * 40, "size": 1, "path": f"more/{start + i:012d}"}
                    for i in range(ENDLESS_PAGE)]
            return 200, page, {"Link": f'<{self.url}{url.path}?{rest}&cursor={start + ENDLESS_PAGE}>; rel="next"'}
        page = [dict(e) for e in entries[start:start + PAGE]]
        for e in page if expand else ():
            e["lastCommit"] = {"id": COMMIT, "title": "Upload", "date": "2024-03-17T19:45:00.000Z"}
            if e["type"] == "file":
                e["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                           "pickleImportScan": None}
        headers = {}
        if start + PAGE < len(entries):
            headers["Link"] = f'<{self.url}{url.path}?{rest}&cursor={start + PAGE}>; rel="next"'
        return 200, page, headers


def _answer(handler: BaseHTTPRequestHandler, status: int, headers: dict) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", "0")
    handler.end_headers()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a folder as a hub repository on 127.0.0.1.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--repo", default="xai-org/grok-1")
    parser.add_argument("--rate", type=float, default=None, help="bytes per second, all connections together")
    args = parser.parse_args()
    hub = FakeHub({args.repo: repo_from_folder(args.root)}, files={args.repo: args.root}, rate=args.rate)
    for path in args.root.rglob("*"):
        if path.is_file():
            hub.sha256(path)
    with hub:
        print(hub.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
