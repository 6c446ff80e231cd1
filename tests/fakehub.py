"""A local stand-in for the model hub's HTTP API, serving a small synthetic repository.

The responses follow the hub's documented format, as huggingface_hub reads it:

- ``GET /api/models/{repo}/revision/{rev}``: the repository's info, ``sha`` being the commit;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..&expand=..``: a JSON list of entries
  ``{"type": "file", "oid": <git blob id>, "size": n, "path": p, "lfs": {"oid": <sha256>, "size": n,
  "pointerSize": 134}}`` or ``{"type": "directory", "oid": .., "size": 0, "path": p}``; with ``expand``
  also ``lastCommit`` and ``securityFileStatus``; paginated with a ``Link: <url>; rel="next"`` header;
- an unknown repository or revision: 404 with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

COMMIT = "3f1c0b9d2e4a5f60718293a4b5c6d7e8f9012345"
PAGE = 2  # entries per page: small, so that pagination is exercised


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

    def __init__(self, repos: dict[str, list[dict]]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                hub.requests.append(self.path)
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
        self.server.shutdown()
        self.server.server_close()

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
        page = [dict(e) for e in entries[start:start + PAGE]]
        for e in page if expand else ():
            e["lastCommit"] = {"id": COMMIT, "title": "Upload", "date": "2024-03-17T19:45:00.000Z"}
            if e["type"] == "file":
                e["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                           "pickleImportScan": None}
        headers = {}
        if start + PAGE < len(entries):
            rest = "&".join(f"{k}={v[0]}" for k, v in query.items() if k != "cursor")
            headers["Link"] = f'<{self.url}{url.path}?{rest}&cursor={start + PAGE}>; rel="next"'
        return 200, page, headers
