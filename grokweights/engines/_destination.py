"""Where an export may write: one writer per destination, nothing replaced that the export does not own.

* **One writer.** ``.DST.lock`` beside the destination is locked with ``fcntl.flock`` (exclusive,
  non-blocking) for the whole export and holds the writer's pid; a second export of the same destination
  is refused at once, naming the holder and the lock. The holder removes the file as it lets go; after a
  ``kill -9`` the kernel drops the lock and the file left behind locks nothing.
* **Only its own files.** The destination may not be empty (the current folder), inside the source
  checkpoint or another checkpoint folder, nor under a file. ``--force`` replaces only what an export
  writes: the ``.gguf`` file and its split parts named exactly ``NAME-NNNNN-of-NNNNN.gguf``, or a folder
  holding nothing but safetensors files, their index, ``config.json`` and ``tokenizer.model``.
* **Starting over.** Files are written under ``.DST.partial/``; before the renames into place a marker
  there lists the final names. A run that finds the staging folder of an interrupted export removes it,
  and, when the marker shows the publication was cut short (the first split, renamed last, is still
  staged), the parts already renamed: the rerun starts over instead of refusing them as existing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from .._lockfile import hold_lock
from ..checkpoint.files import in_checkpoint_folder
from ..errors import GrokWeightsError, InsufficientSpaceError, UsageError

__all__ = ["export_lock", "check_place", "check_existing", "staging_path", "clear_leftovers", "mark_publishing",
           "remove", "write_error"]

#: the marker in the staging folder listing the final names being published.
MARKER = ".publishing"
#: what a safetensors export folder holds (anything else makes it not ours to replace).
_EXPORT_FILE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors|model\.safetensors\.index\.json|config\.json|"
                          r"tokenizer\.model")


def staging_path(dst: Path) -> Path:
    """The hidden folder an export is written in before its files are renamed into place."""
    return dst.parent / f".{dst.name}.partial"


def _lock_path(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.lock"


@contextlib.contextmanager
def export_lock(dst: Path) -> Iterator[Path]:
    """Hold the destination's lock for the block (creating its folder); yields the lock file's path.

    The holder removes the file before it lets go, so none is left beside a finished export
    (:func:`grokweights._lockfile.hold_lock`).

    Raises:
        GrokWeightsError: another export holds it (its pid and the lock file are named), or it cannot be made.
    """
    path = _lock_path(dst)
    busy = (lambda pid: f"{dst}: another export is writing this destination (pid {pid}, lock {path}); wait for it "
            "to finish or stop it, then rerun")
    with hold_lock(path, what="the export's lock file", busy=busy, remove=True):
        yield path


def split_parts(dst: Path) -> list[Path]:
    """The split parts of ``dst`` already there: exactly ``STEM-NNNNN-of-NNNNN.gguf`` (llama.cpp's naming)."""
    pattern = re.compile(re.escape(dst.stem) + r"-\d{5}-of-\d{5}\.gguf")
    try:
        return sorted(p for p in dst.parent.iterdir() if pattern.fullmatch(p.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _refuse(dst: Path, text: str, why: str) -> UsageError:
    return UsageError(f"{text}: {why}; choose another destination", path=dst, expected="a destination of its own",
                      actual=why)


def check_place(src: str | os.PathLike[str], ckpt: Path | None, dst: Path, text: str) -> None:
    """Refuse an empty destination, one under a file, and one in the source (``ckpt``: its ``ckpt-0/``, None for
    a store) or in any checkpoint folder.

    Raises:
        UsageError: naming the destination and why it is not the export's to write.
    """
    if not text.strip():
        raise UsageError("export: the destination is empty (it would write into the current folder); name a "
                         "destination such as grok-1.gguf or grok-1-sglang", expected="a path", actual=text)
    probe = Path(os.path.abspath(dst)).parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{probe}: is a file, not a folder, so {text} cannot be created in it; choose another "
                         "destination", path=probe, expected="a folder", actual="a file")
    real, parent = os.path.realpath(dst), os.path.realpath(dst.parent)
    if ckpt is None:  # a store: never write in it (a URL has no local folder)
        store = os.path.realpath(src) if "://" not in os.fspath(src) else None
        if store is not None and (real == store or real.startswith(store + os.sep)):
            raise _refuse(dst, text, f"is inside the source store {os.fspath(src)}")
    else:
        home = os.path.realpath(ckpt)
        if real in (home, os.path.realpath(src), os.path.dirname(home)) or real.startswith(home + os.sep):
            raise _refuse(dst, text, f"is inside the source checkpoint {os.fspath(src)} (the export would mix with "
                                     "or replace its shards)")
    if in_checkpoint_folder(parent + os.sep + dst.name):
        raise _refuse(dst, text, f"is in a checkpoint's folder ({parent}: a ckpt-0 or a folder of shards)")


def _check_folder(dst: Path, text: str) -> None:
    """A folder is ours to replace only when it holds nothing but an export's files."""
    if not dst.is_dir() or dst.is_symlink():
        raise _refuse(dst, text, "exists and is not a folder (--format sglang and hf write a folder)")
    foreign = sorted(p.name for p in dst.iterdir() if not _EXPORT_FILE.fullmatch(p.name) or not p.is_file())
    if foreign:
        raise _refuse(dst, text, f"holds {len(foreign)} file(s) that are not an export's ({foreign[0][:80]}"
                                 f"{', ...' if len(foreign) > 1 else ''}); --force replaces only an export")


def check_existing(fmt: str, dst: Path, text: str, force: bool) -> list[Path]:
    """What ``--force`` would replace at ``dst`` (empty when nothing is there); the parts an interrupted
    publication left (:func:`clear_leftovers` removes them) do not count.

    Raises:
        UsageError: something that is not an export is in the way, or an export exists and ``force`` is false.
    """
    if fmt == "gguf":
        if dst.is_dir() and not dst.is_symlink():
            raise UsageError(f"{dst}: is a folder; --format gguf writes a file (e.g. {dst / 'grok-1.gguf'})",
                             path=dst, expected="a .gguf file path", actual="folder")
        if os.path.lexists(dst) and not dst.is_symlink() and not dst.is_file():
            raise _refuse(dst, text, "exists and is not a regular file")
        left = set(_interrupted(dst))
        existing = ([dst] if os.path.lexists(dst) else []) + [p for p in split_parts(dst) if p not in left]
    else:
        existing = [dst] if os.path.lexists(dst) else []
        if existing:
            _check_folder(dst, text)
    if existing and not force:
        raise UsageError(f"{existing[0]}: destination exists; pass --force to replace it", path=existing[0],
                         expected="a new path", actual="exists")
    return existing


def write_error(exc: OSError, dst: Path) -> GrokWeightsError:
    """One line for a write that failed (the partial output has been removed)."""
    where = exc.filename or dst
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return InsufficientSpaceError(f"{dst.parent}: the export ran out of room writing {where} ({exc.strerror}); "
                                      "the partial output was removed: free space or choose another destination",
                                      path=dst.parent, actual=exc.strerror)
    return GrokWeightsError(f"{where}: cannot write the export ({exc.strerror or exc}); the partial output was "
                            "removed: check the destination", path=where)


def remove(paths: Iterable[Path]) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def mark_publishing(staging: Path, finals: list[Path]) -> None:
    """Record, in the staging folder, the final names about to be renamed into place (first split last)."""
    (staging / MARKER).write_text(json.dumps([p.name for p in finals]))


def _interrupted(dst: Path) -> list[Path]:
    """The split parts of ``dst`` an interrupted publication renamed into place (see the module docstring)."""
    staging = staging_path(dst)
    if not staging.is_dir() or staging.is_symlink():
        return []
    try:
        names = json.loads((staging / MARKER).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(names, list) or not names or not isinstance(names[0], str) or \
            not (staging / names[0]).is_file():  # the first split was renamed: the export is complete
        return []
    ours = {p.name: p for p in split_parts(dst)}
    return [ours[n] for n in names if isinstance(n, str) and n in ours]


def clear_leftovers(dst: Path) -> None:
    """Remove an interrupted export's staging folder and the parts its publication had renamed into place."""
    staging = staging_path(dst)
    if os.path.lexists(staging):
        remove(_interrupted(dst))
        remove([staging])
