"""The store index (``grokweights.json``), read and written in one place.

The index is a store's last write and its table of contents: the plan, every array's data digest and
``zarr.json`` digest, the source, and its own digest. :func:`read_index` checks it; :func:`write_index` writes
it once every array is published; :func:`existing_index` decides what a new write into a store may keep;
:func:`unpublish` makes a store unfinished again.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from typing import Any

from ..checkpoint.files import MAX_JSON_BYTES
from ..constants import STORE_INDEX_NAME, STORE_LOCK_NAME
from ..errors import StoreError, WriteError
from ..sharding.plan import FORMAT_VERSION, ReshardPlan
from . import kv as tskv
from .specs import kvstore_spec

__all__ = ["read_index", "write_index", "existing_index", "unpublish", "index_digest", "store_state",
           "INDEX_FORMAT", "FINISHED", "UNFINISHED"]

logger = logging.getLogger(__name__)

#: the ``format`` of a store index.
INDEX_FORMAT = "grokweights.store"
FINISHED, UNFINISHED = "finished", "unfinished"
_FIELDS = {"plan": dict, "sha256": dict, "metadata": dict, "config": dict, "mesh": dict, "rules": dict}


def index_digest(index: dict[str, Any]) -> str:
    """The sha256 of an index without its ``digest`` field (canonical JSON: sorted keys, no spaces)."""
    body = {k: v for k, v in index.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def store_state(path: str | os.PathLike[str]) -> str | None:
    """``finished`` (a local folder with a store index), ``unfinished`` (a store a reshard has begun: its lock
    file or array folders, no index) or None (not a local store)."""
    text = os.fspath(path)
    if os.path.isfile(os.path.join(text, STORE_INDEX_NAME)):
        return FINISHED
    if any(os.path.lexists(os.path.join(text, name)) for name in (STORE_LOCK_NAME, "language_model", "transformer")):
        return UNFINISHED
    return None


def read_index(dst: str | os.PathLike[str], *, ctx: Any = None, any_version: bool = False) -> dict[str, Any] | None:
    """The store index of ``dst`` (``grokweights.json``), checked, or None when absent (not a finished store).

    Raises:
        StoreError: not JSON, not an index, of another store format version (unless ``any_version``), edited
            since reshard wrote it (its ``digest``), or inconsistent with its own plan.
    """
    where = f"{os.fspath(dst).rstrip('/')}/{STORE_INDEX_NAME}"
    raw = tskv.read_small(kvstore_spec(dst), STORE_INDEX_NAME, limit=MAX_JSON_BYTES, what="store index", ctx=ctx)
    if raw is None:
        return None
    try:
        index = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"{where}: not valid JSON ({str(exc)[:100]}); rerun `grokweights reshard` into this "
                         "store to rewrite it", path=where) from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise StoreError(f"{where}: not a grokweights store index; delete it and rerun `grokweights reshard`",
                         path=where, expected=INDEX_FORMAT)
    version = index.get("version")
    if version != FORMAT_VERSION and not any_version:
        older = isinstance(version, int) and version < FORMAT_VERSION
        fix = "rerun `grokweights reshard SRC DST` to convert it" if older else "upgrade grokweights to read it"
        raise StoreError(f"{where}: store format version {str(version)[:20]}, but this grokweights reads version "
                         f"{FORMAT_VERSION}; {fix}", path=where, expected=FORMAT_VERSION, actual=version)
    if version == FORMAT_VERSION:
        _check_index(index, where)
    return index


def _check_index(index: dict[str, Any], where: str) -> None:
    """Fields present and typed, the self-digest intact, the copies of mesh/rules/config equal to the plan's."""
    for name, kind in _FIELDS.items():
        if not isinstance(index.get(name), kind):
            raise StoreError(f"{where}: the index lacks {name!r} (or it is not a JSON {kind.__name__}); the store is "
                             "damaged: rerun `grokweights reshard` into it", path=where, expected=name)
    if index.get("digest") != index_digest(index):
        raise StoreError(f"{where}: the index was edited after reshard wrote it (its digest does not match); rerun "
                         "`grokweights reshard` into this store to rewrite it", path=where)
    plan = index["plan"]
    for name in ("mesh", "rules", "config"):
        if index[name] != plan.get(name):
            raise StoreError(f"{where}: the index's {name} differs from its plan's; rerun `grokweights reshard` into "
                             "this store to rewrite it", path=where, expected=plan.get(name), actual=index[name])


def write_index(kv: dict[str, Any], plan: ReshardPlan, digests: dict[str, str], source: dict[str, Any] | None,
                ctx: Any) -> None:
    """Write the store index: the last write of a store, after every array is published.

    Besides the plan and the data digests it records the sha256 of every array's ``zarr.json`` (binding each
    array's metadata, and with it its chunk table, to its path) and its own ``digest`` (:func:`index_digest`)."""
    metadata = {}
    for array in plan.arrays:
        raw = tskv.read_key(kv, f"{array.store_path}/zarr.json", ctx=ctx)
        if raw is None:
            raise StoreError(f"{array.store_path}: not published; rerun reshard", path=array.store_path)
        metadata[array.store_path] = hashlib.sha256(raw).hexdigest()
    index = {
        "format": INDEX_FORMAT, "version": plan.version,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": plan.config.to_dict(), "mesh": plan.mesh.to_dict(), "rules": plan.rules.to_dict(),
        "plan": plan.to_dict(), "sha256": digests, "metadata": metadata, "source": {"manifest": source},
    }
    index["digest"] = index_digest(index)
    try:
        tskv.write_key(kv, STORE_INDEX_NAME, json.dumps(index, indent=1).encode(), ctx=ctx)
    except ValueError as exc:  # tensorstore: no space, read-only, ...
        where = f"{kv.get('path', '').rstrip('/')}/{STORE_INDEX_NAME}"
        raise WriteError(f"{where}: cannot write the store index ({str(exc).splitlines()[0][:200]}); free space or "
                         "choose another destination, then rerun `grokweights reshard` into the store", path=where,
                         ) from None


def _current_index(dst: str | os.PathLike[str], ctx: Any) -> dict[str, Any] | None:
    """The index already in ``dst`` when it is current and intact; None when absent, of an older format
    (converted: every array is rewritten) or damaged (each array is proven or rewritten)."""
    try:
        existing = read_index(dst, ctx=ctx, any_version=True)
    except StoreError as exc:
        logger.warning("%s; rewriting the index", exc)
        return None
    if existing is not None and existing.get("version") != FORMAT_VERSION:
        if not isinstance(existing.get("version"), int) or existing["version"] > FORMAT_VERSION:
            raise StoreError(f"{dst}: holds a store of format version {str(existing.get('version'))[:20]}, newer "
                             f"than this grokweights writes ({FORMAT_VERSION}); upgrade grokweights or choose another "
                             "destination", path=os.fspath(dst))
        logger.warning("%s: converting a store of format version %s to %s", dst, existing["version"], FORMAT_VERSION)
        return None
    return existing


def existing_index(dst: str | os.PathLike[str], plan: ReshardPlan, ctx: Any) -> dict[str, Any] | None:
    """The index already in ``dst`` when it is current, intact and for ``plan``; None when absent, of an older
    format or damaged.

    Raises:
        StoreError: ``dst`` holds a store for another plan, or of a newer format.
    """
    existing = _current_index(dst, ctx)
    if existing is not None and existing.get("plan") != plan.to_dict():
        raise StoreError(f"{dst}: already holds a store for another plan (mesh {existing.get('mesh')}, rules "
                         f"{existing.get('rules', {}).get('name')}); delete it or choose another destination",
                         path=os.fspath(dst), expected=plan.mesh.to_dict(), actual=existing.get("mesh"))
    return existing


def unpublish(kv: dict[str, Any], ctx: Any) -> None:
    """Delete the store index: the store is unfinished until every array is proven complete again."""
    tskv.delete_key(kv, STORE_INDEX_NAME, ctx=ctx)
