"""TensorStore specs as plain data: pure functions from a location and a plan entry to spec dicts.

Nothing here imports tensorstore; :mod:`.kv` opens what these functions describe. The store's dtype names
are the checkpoint's (:mod:`grokweights.checkpoint.dtypes`), which are also zarr v3's data type names.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlparse

from ..checkpoint.dtypes import ITEMSIZE
from ..errors import UsageError

__all__ = ["kvstore_spec", "local_path", "join", "codecs_for", "zarr3_spec", "record_of", "RECORD_KEY",
           "MAX_ZARR_JSON_BYTES"]


def kvstore_spec(location: str | os.PathLike[str]) -> dict[str, Any]:
    """The kvstore spec of a store location: a local path, ``file://``, ``memory://``, ``gs://``, ``s3://``."""
    text = os.fspath(location)
    if "://" not in text:
        return {"driver": "file", "path": os.path.abspath(text).rstrip("/") + "/"}
    url = urlparse(text)
    rest = (url.netloc + url.path).strip("/")
    if url.scheme == "file":
        return {"driver": "file", "path": os.path.abspath(url.netloc + url.path).rstrip("/") + "/"}
    if url.scheme == "memory":
        return {"driver": "memory", "path": rest + "/" if rest else ""}
    if url.scheme in ("gs", "s3"):
        path = url.path.strip("/")
        return {"driver": "gcs" if url.scheme == "gs" else "s3", "bucket": url.netloc,
                "path": path + "/" if path else ""}
    raise UsageError(f"unsupported store location {text!r}: use a local path or a file://, memory://, gs:// or "
                     "s3:// URL", expected="path|file://|memory://|gs://|s3://", actual=text)


def local_path(kvstore: dict[str, Any]) -> str | None:
    """The local directory of a ``file`` kvstore, else None."""
    return kvstore["path"] if kvstore.get("driver") == "file" else None


def join(kvstore: dict[str, Any], *parts: str) -> dict[str, Any]:
    """``kvstore`` with ``parts`` appended to its path (as a directory)."""
    path = kvstore.get("path", "") + "/".join(p.strip("/") for p in parts if p)
    return {**kvstore, "path": path.rstrip("/") + "/"}


def codecs_for(codec: str) -> list[dict[str, Any]]:
    """zarr3 codecs for ``none`` or ``zstd:LEVEL``: little-endian bytes, then compression, then a crc32c of the
    encoded chunk (4 bytes appended, checked by every reader: tensorstore and zarr-python)."""
    codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if codec.startswith("zstd"):
        level = int(codec.partition(":")[2] or 1)
        codecs.append({"name": "zstd", "configuration": {"level": level, "checksum": False}})
    codecs.append({"name": "crc32c"})
    return codecs


def zarr3_spec(kvstore: dict[str, Any], path: str, *, shape: tuple[int, ...], dtype: str,
               chunk_shape: tuple[int, ...], codec: str = "none",
               attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TensorStore spec of one zarr3 array at ``kvstore``/``path``."""
    metadata: dict[str, Any] = {
        "shape": list(shape), "data_type": _zarr_dtype(dtype),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk_shape)}},
        "chunk_key_encoding": {"name": "default"}, "codecs": codecs_for(codec), "fill_value": 0,
    }
    if attributes is not None:
        metadata["attributes"] = attributes
    return {"driver": "zarr3", "kvstore": join(kvstore, path), "metadata": metadata}


def _zarr_dtype(name: str) -> str:
    """The zarr v3 data type of one of our dtype names (they are spelled the same)."""
    if name not in ITEMSIZE:
        raise UsageError(f"dtype {name!r} cannot be stored; expected one of {', '.join(ITEMSIZE)}",
                         expected=list(ITEMSIZE), actual=name)
    return name


#: a ``zarr.json`` larger than this is refused before it is read (Grok-1's largest, with its chunk table, is a few
#: KiB)
MAX_ZARR_JSON_BYTES = 16 * 1024 * 1024

#: the key of an array's ``zarr.json`` attributes under which reshard records plan entry, source and digest.
RECORD_KEY = "grokweights"


def record_of(zarr_json: bytes) -> dict[str, Any] | None:
    """The record reshard keeps in an array's ``zarr.json`` (see :data:`RECORD_KEY`), or None if it has none."""
    try:
        record = json.loads(zarr_json)["attributes"][RECORD_KEY]
    except (ValueError, KeyError, TypeError):
        return None
    return record if isinstance(record, dict) else None
