"""HTTP to the model hub, standard library only: where a file lives, the token, redirects, the LFS headers.

The hub keeps a repository's files at ``ENDPOINT/<repo>/resolve/<revision>/<path in repo>``. A request
there answers with a redirect to a content server (for LFS files) and names, in headers, the commit the
revision resolved to (``X-Repo-Commit``), the LFS object's sha256 (``X-Linked-Etag``) and its size
(``X-Linked-Size``). The endpoint and the token follow huggingface_hub's convention: ``HF_ENDPOINT``
(default the public hub), ``HF_TOKEN``, else the token file (``HF_TOKEN_PATH``, else ``$HF_HOME/token``,
``HF_HOME`` defaulting to ``~/.cache/huggingface``). The token is sent to the endpoint's host only, never
to the content servers it redirects to. Requests go through urllib, so the usual proxy settings
(``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``) apply.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from ..errors import UsageError

__all__ = ["HubRef", "HubFileInfo", "HubHTTPError", "parse_hub", "hub_endpoint", "hub_token", "open_url",
           "DEFAULT_ENDPOINT", "MAX_REDIRECTS"]

DEFAULT_ENDPOINT = "https://huggingface.co"
#: redirects followed for one request (the hub needs one: resolve -> content server)
MAX_REDIRECTS = 8
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REDIRECTS = (301, 302, 303, 307, 308)


def hub_endpoint(endpoint: str | None = None) -> str:
    """``endpoint``, else ``HF_ENDPOINT``, else the public hub; without a trailing slash."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """The hub token where one is set: ``HF_TOKEN``, else the token file huggingface_hub writes at login."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token.strip() or None
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    path = Path(os.environ.get("HF_TOKEN_PATH") or home / "token")
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return None
    return text.strip() or None


@dataclass(frozen=True)
class HubRef:
    """A hub repository at a revision: ``xai-org/grok-1`` or ``xai-org/grok-1@REVISION`` (default ``main``)."""

    repo: str
    revision: str = "main"
    endpoint: str = DEFAULT_ENDPOINT

    def url(self, path: str, revision: str | None = None) -> str:
        """The resolve URL of ``path`` (a path in the repository) at ``revision`` (default this one)."""
        rev = quote(revision or self.revision, safe="")
        return f"{self.endpoint}/{self.repo}/resolve/{rev}/{quote(path, safe='/')}"

    def __str__(self) -> str:
        return f"{self.repo}@{self.revision}"


def parse_hub(text: str, *, endpoint: str | None = None) -> HubRef:
    """Parse ``OWNER/NAME[@REVISION]``.

    Raises:
        UsageError: anything else, naming what was given and what is expected.
    """
    repo, at, revision = str(text).strip().partition("@")
    if not _REPO.fullmatch(repo) or ".." in repo or (at and not re.fullmatch(r"[^\s]{1,200}", revision)):
        raise UsageError(f"bad hub repository {text!r}; expected OWNER/NAME[@REVISION], e.g. xai-org/grok-1",
                         expected="OWNER/NAME[@REVISION]", actual=text)
    return HubRef(repo, revision or "main", hub_endpoint(endpoint))


@dataclass(frozen=True)
class HubFileInfo:
    """What the hub's resolve answer says about one file: the commit, the LFS sha256 and the size."""

    path: str
    commit: str | None
    sha256: str | None
    size: int | None


class HubHTTPError(Exception):
    """A hub request that did not give the data.

    Attributes:
        status: the HTTP status (0: no answer: connection refused, reset, timed out, cut short).
        transient: whether asking again later may work (429, 5xx, no answer), as opposed to a missing file,
            a refusal or a redirect loop.
        retry_after: seconds the server asked to wait (``Retry-After``), or None.
        code: the hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ...).
    """

    def __init__(self, message: str, *, status: int = 0, transient: bool = False,
                 retry_after: float | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.transient, self.retry_after, self.code = status, transient, retry_after, code

    @property
    def fatal(self) -> bool:
        """Whether the repository or revision itself is wrong or closed to us (not one file missing)."""
        return self.status in (401, 403) or self.code in ("RepoNotFound", "RevisionNotFound", "GatedRepo")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the caller's own back-off applies


class _Manual(urllib.request.HTTPRedirectHandler):
    """Redirects are followed by :func:`open_url` itself (bounded, loops refused, the token kept home)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


#: urllib's opener: proxies from the environment (``HTTPS_PROXY``, ``NO_PROXY``), TLS with the system's CAs
_OPENER = urllib.request.build_opener(_Manual)


def info_from(path: str, headers: http.client.HTTPMessage, first: HubFileInfo | None) -> HubFileInfo | None:
    """The LFS facts of a resolve answer (kept from the first answer that names them)."""
    if first is not None and first.commit:
        return first
    etag = (headers.get("X-Linked-Etag") or "").strip().removeprefix("W/").strip('"').lower()
    size = headers.get("X-Linked-Size")
    commit = headers.get("X-Repo-Commit")
    if not commit and not etag:
        return first
    return HubFileInfo(path, commit or None, etag if _SHA256.fullmatch(etag) else None,
                       int(size) if size and size.isdigit() else None)


def open_url(url: str, *, path: str, method: str = "GET", headers: dict[str, str] | None = None,
             token: str | None = None, token_host: str | None = None, timeout: float = 30.0,
             max_redirects: int = MAX_REDIRECTS) -> tuple[http.client.HTTPResponse, HubFileInfo | None]:
    """Request ``url``, following redirects; the final response (2xx, body unread; its URL as ``final_url``)
    and the LFS facts.

    ``token`` goes only to ``token_host`` (default: ``url``'s host, the hub's), never to the servers it
    redirects to.

    Raises:
        HubHTTPError: a redirect loop or too many redirects (permanent), an HTTP error status (429 and 5xx
            transient, with ``Retry-After``; the hub's ``X-Error-Code`` as ``code``), or no answer (transient).
    """
    token_host = token_host or urlsplit(url).netloc
    seen: list[str] = []
    info: HubFileInfo | None = None
    while True:
        if url in seen:
            raise HubHTTPError(f"redirect loop at {url} (after {len(seen)} redirects)")
        if len(seen) > max_redirects:
            raise HubHTTPError(f"more than {max_redirects} redirects from {seen[0]}")
        seen.append(url)
        sent = dict(headers or {})
        if token and urlsplit(url).netloc == token_host:
            sent["Authorization"] = f"Bearer {token}"
        if urlsplit(url).scheme not in ("http", "https"):
            raise HubHTTPError(f"{url}: not an http(s) URL")
        try:
            resp = _OPENER.open(urllib.request.Request(url, headers=sent, method=method), timeout=timeout)
        except urllib.error.HTTPError as exc:  # an error status, or a redirect left to us
            resp = exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise HubHTTPError(f"{url}: no answer ({exc or type(exc).__name__})", transient=True) from None
        status = resp.status if resp.status is not None else resp.code
        info = info_from(path, resp.headers, info)
        if status in _REDIRECTS:
            location = resp.headers.get("Location")
            resp.close()
            if not location:
                raise HubHTTPError(f"{url}: redirect without a Location", status=status)
            url = urljoin(url, location)
            continue
        if 200 <= status < 300:
            resp.final_url = url  # type: ignore[attr-defined]
            return resp, info
        wait = _retry_after(resp.headers.get("Retry-After"))
        code = resp.headers.get("X-Error-Code")
        resp.close()
        transient = status in (408, 425, 429) or status >= 500
        raise HubHTTPError(f"{url}: HTTP {status} {resp.reason}" + (f" ({code})" if code else ""),
                           status=status, transient=transient, retry_after=wait, code=code)
