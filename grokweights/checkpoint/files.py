"""Open regular files only, and read JSON files into one-line errors.

A FIFO in place of a shard would block a reader forever, a directory gives ``IsADirectoryError`` and a
device never ends. :func:`open_regular` opens without blocking (``O_NONBLOCK``: opening a FIFO with no
writer returns at once) and checks the *opened descriptor* with ``fstat``, so nothing can swap the file
between the check and the read; anything but a regular file raises :class:`NotRegularFileError` naming
the path and what it is.

:func:`read_json` / :func:`parse_json` turn every way a JSON document can fail (syntax, nesting deeper
than the parser recurses, integers longer than Python converts, bytes that are not UTF-8, a file that is
not a file) into one error of the caller's class naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import stat
from typing import IO, Any

from ..errors import GrokWeightsError, NotRegularFileError, UsageError

__all__ = ["open_regular", "read_json", "parse_json", "file_kind", "check_output", "in_checkpoint_folder",
           "MAX_JSON_BYTES"]

#: JSON documents (manifests, configs, rules) larger than this are refused (the grok-1 manifest is ~150 KB).
MAX_JSON_BYTES = 64 * 1024 * 1024

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is, in words (``a regular file``, ``a FIFO (named pipe)``, ...)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike[str], *, what: str = "file", fix: str = "replace it with the real file",
                 buffering: int = -1) -> IO[bytes]:
    """Open ``path`` for binary reading if it is a regular file (checked on the opened descriptor).

    Raises:
        NotRegularFileError: ``path`` is a directory, FIFO, device or socket (one line naming it and ``fix``).
        FileNotFoundError, PermissionError: as ``open`` does.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise NotRegularFileError(f"{name}: cannot open this {what} ({exc.strerror or exc}); {fix}",
                                  path=name) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(f"{name}: this {what} is {file_kind(mode)}, not a regular file; {fix}",
                                      path=name, expected="a regular file", actual=file_kind(mode))
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def make_folder(path: str | os.PathLike[str], *, what: str = "folder", fix: str = "choose another folder",
                create: bool = True) -> None:
    """Create the folder ``path`` (and its parents), or keep it when it is one already; ``create=False`` only
    checks that nothing but a folder is in the way (for a dry run, which creates nothing).

    Raises:
        UsageError: something else is in the way (a file, a device such as ``/dev/null``, a FIFO) or the folder
            cannot be created (permissions, a read-only file system); one line naming ``path`` and ``fix``.
    """
    name = os.fspath(path)
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise UsageError(f"{name}: cannot use this {what} ({exc.strerror or exc}); {fix}", path=name) from None
    if mode is not None and not stat.S_ISDIR(mode):
        raise UsageError(f"{name}: this {what} is {file_kind(mode)}, not a folder; {fix}", path=name,
                         expected="a folder", actual=file_kind(mode))
    if not create:
        return
    try:
        os.makedirs(name, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{name}: cannot create this {what} ({exc.strerror or exc}); {fix}", path=name) from None


def parse_json(text: str | bytes, *, source: str, what: str = "JSON file", fix: str = "fix or replace it",
               error: type[GrokWeightsError] = GrokWeightsError) -> Any:
    """``json.loads(text)``; any failure raises ``error`` naming ``source``, what is wrong and ``fix``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except RecursionError:
        problem = "is nested too deeply to be read"
    except UnicodeDecodeError as exc:
        problem = f"is not UTF-8 text (byte {exc.start})"
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        problem = f"cannot be read ({str(exc).splitlines()[0][:120]})"
    raise error(f"{source}: {what} {problem}; {fix}", path=source)


def read_json(path: str | os.PathLike[str], *, what: str = "JSON file", fix: str = "fix or replace it",
              error: type[GrokWeightsError] = GrokWeightsError) -> Any:
    """Read and parse a JSON file (a regular file of at most ``MAX_JSON_BYTES``); errors as :func:`parse_json`."""
    name = os.fspath(path)
    try:
        with open_regular(name, what=what, fix=fix) as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except NotRegularFileError as exc:
        raise error(exc.message, path=name) from None
    except OSError as exc:
        raise error(f"{name}: cannot read this {what} ({exc.strerror or exc}); {fix}", path=name) from None
    if len(raw) > MAX_JSON_BYTES:
        raise error(f"{name}: {what} is larger than {MAX_JSON_BYTES} bytes; {fix}", path=name)
    return parse_json(raw, source=name, what=what, fix=fix, error=error)


def in_checkpoint_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies in a checkpoint's folder: a ``ckpt-0`` (at any depth above it) or a folder of shards."""
    from pathlib import Path

    from ..constants import CKPT_DIRNAME, SHARD_GLOB

    folder = Path(os.path.abspath(path)).parent
    if any(part == CKPT_DIRNAME for part in folder.parts):
        return True
    try:
        return any(folder.glob(SHARD_GLOB))
    except OSError:
        return False


def check_output(path: str | os.PathLike[str], *, force: bool = False, option: str = "-o",
                 what: str = "the output") -> str:
    """Refuse an output file a command must not write: one in a checkpoint's folder (a shard above all), ever;
    one that exists, unless ``force``; and, even with ``force``, anything but a regular file (a folder, a
    device, a FIFO) or a file in a folder that does not exist. Returns the path.

    Raises:
        UsageError: naming the path, ``option`` and the fix.
    """
    from ..errors import UsageError

    name = os.fspath(path)
    if not name.strip():
        raise UsageError(f"{option} is empty; name a file", expected="a file name", actual=name)
    if in_checkpoint_folder(name):
        raise UsageError(f"{name}: refusing to write {what} into a checkpoint's folder (onto or beside its shards); "
                         f"choose another {option}", path=name, expected="outside the checkpoint folder")
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        raise UsageError(f"{name}: folder {folder} does not exist; create it or choose another {option}", path=name,
                         expected="an existing folder")
    try:
        st = os.stat(name)
    except FileNotFoundError:
        return name
    except OSError as exc:
        raise UsageError(f"{name}: cannot check {option} ({exc.strerror or exc}); choose another {option}",
                         path=name) from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{name} is {file_kind(st.st_mode)}; {option} replaces only a regular file: choose another "
                         f"{option}", path=name, expected="a regular file", actual=file_kind(st.st_mode))
    if not force:
        raise UsageError(f"{name} already exists; refusing to overwrite it: choose another {option} or pass --force",
                         path=name, expected="a new file", actual="exists")
    return name
