"""sha256 of each shard from the model hub's metadata (``huggingface_hub``, the optional extra ``hub``).

The hub stores large files as LFS objects addressed by their sha256, and lists it for every file of a
repository tree (``HfApi.list_repo_tree(..., recursive=True)``: ``RepoFile.lfs.sha256``), so the hashes
come without downloading any data. The revision is first resolved to a commit (``model_info``) and the
tree listed at that commit, so the provenance names exactly what was read: ``hub:<repo>@<commit>``.

The endpoint is huggingface_hub's own setting: ``HF_ENDPOINT`` in the environment, or ``endpoint=``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..errors import GrokWeightsError, UsageError

__all__ = ["HubFile", "HubPins", "hub_files", "hub_pins", "hub_api"]

logger = logging.getLogger(__name__)

#: most entries read from a repository listing (the release has under 800 files): a hub whose listing never
#: ends is refused instead of followed for ever.
MAX_HUB_ENTRIES = 100_000


@dataclass(frozen=True)
class HubFile:
    """One file of a hub repository: path, size, and the LFS sha256 (None for a file kept in git)."""

    path: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class HubPins:
    """The sha256 the hub lists for a manifest's shards, and where they came from."""

    repo: str
    commit: str
    sha256: dict[str, str]  # manifest shard path -> sha256
    missing: list[str] = field(default_factory=list)  # shard paths the hub has no LFS sha256 for

    @property
    def source(self) -> str:
        """The provenance recorded beside each pinned hash."""
        return f"hub:{self.repo}@{self.commit}"


def hub_api(endpoint: str | None = None, token: str | bool | None = None) -> Any:
    """An ``HfApi`` client; a one-line error when the optional extra is not installed."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UsageError("pinning from the hub needs huggingface_hub: pip install 'grokweights[hub]'",
                         expected="huggingface_hub installed", actual="not installed") from None
    # huggingface_hub reads HF_ENDPOINT once, at import; read it here so a later setting is honoured too
    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)


def _lfs_sha256(entry: Any) -> str | None:
    lfs = getattr(entry, "lfs", None)
    if lfs is None:
        return None
    sha = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
    return sha.lower() if isinstance(sha, str) else None


def hub_files(repo: str, *, revision: str | None = None, endpoint: str | None = None,
              token: str | bool | None = None) -> tuple[str, dict[str, HubFile]]:
    """The commit ``revision`` resolves to, and every file of the repository tree at that commit.

    Raises:
        GrokWeightsError: the hub cannot be reached, or has no such repository or revision (names both).
    """
    api = hub_api(endpoint, token)
    where = f"{repo}@{revision or 'main'}"
    try:
        commit = api.model_info(repo, revision=revision).sha
        if not commit:
            raise GrokWeightsError(f"hub {api.endpoint}: {where} resolves to no commit", path=where)
        files = {}
        for count, entry in enumerate(api.list_repo_tree(repo, recursive=True, revision=commit)):  # lazy pages
            if count >= MAX_HUB_ENTRIES:
                raise GrokWeightsError(f"hub {api.endpoint}: {where} lists more than {MAX_HUB_ENTRIES:,} entries (a "
                                       "listing that never ends?); give the repository of the checkpoint",
                                       path=where, expected=f"at most {MAX_HUB_ENTRIES} entries", actual="more")
            if hasattr(entry, "blob_id"):
                files[entry.path] = HubFile(entry.path, int(entry.size), _lfs_sha256(entry))
    except GrokWeightsError:
        raise
    except Exception as exc:  # huggingface_hub and its HTTP client raise many kinds; one line names the repo
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GrokWeightsError(f"hub {api.endpoint}: cannot list {where}: {first}", path=where) from exc
    logger.info("hub %s@%s: %d files", repo, commit, len(files))
    return commit, files


def _match(path: str, files: dict[str, HubFile], by_name: dict[str, list[HubFile]]) -> HubFile | None:
    """The hub file for a manifest path: the same path, else the only file with the same name."""
    if path in files:
        return files[path]
    same = by_name.get(PurePosixPath(path).name, [])
    return same[0] if len(same) == 1 else None


def hub_pins(shards: Iterable[tuple[str, int]], repo: str, *, revision: str | None = None,
             endpoint: str | None = None, token: str | bool | None = None) -> HubPins:
    """The hub's LFS sha256 for each ``(path, size)`` shard of a manifest.

    A shard the hub lists with another size is refused (the repository holds other data); a shard it
    does not list, or keeps outside LFS, is reported in ``missing``.

    Raises:
        GrokWeightsError: a size differs (naming the file, expected and found), or the hub failed.
    """
    commit, files = hub_files(repo, revision=revision, endpoint=endpoint, token=token)
    by_name: dict[str, list[HubFile]] = {}
    for f in files.values():
        by_name.setdefault(PurePosixPath(f.path).name, []).append(f)
    pins, missing = {}, []
    for path, size in shards:
        found = _match(path, files, by_name)
        if found is None or found.sha256 is None:
            missing.append(path)
            continue
        if found.size != size:
            raise GrokWeightsError(f"hub {repo}@{commit}: {found.path} has {found.size} bytes, the manifest's "
                                   f"{path} has {size}; refusing to pin from another file",
                                   path=path, expected=size, actual=found.size)
        pins[path] = found.sha256
    return HubPins(repo, commit, pins, missing)
