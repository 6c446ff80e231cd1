"""The error hierarchy.

Every error the library raises on purpose derives from :class:`GrokWeightsError`. Subclasses carry
structured fields (``path``, ``expected``, ``actual``) so callers can react without parsing text, and
mix in the builtin they specialise so ``except ValueError`` / ``except OSError`` keep working.

The CLI catches ``GrokWeightsError`` alone and turns it into one line on stderr and ``exit_code``.
"""

from __future__ import annotations

import os
from typing import Any


class GrokWeightsError(Exception):
    """Base class of every deliberate grokweights error.

    Args:
        message: what failed, where, and how to fix it.
        path: the file, tensor or store location concerned, if any.
        expected: what was expected, if the error is a mismatch.
        actual: what was found instead.
    """

    #: process exit status the CLI uses for this kind of error.
    exit_code: int = 1

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        expected: Any = None,
        actual: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return self.message


class UsageError(GrokWeightsError, ValueError):
    """Options or arguments that cannot work together, or name something that does not exist."""

    exit_code = 2


class ConfigError(GrokWeightsError, ValueError):
    """A model configuration that is invalid, or that cannot be inferred unambiguously."""

    exit_code = 2


class ShardFormatError(GrokWeightsError, ValueError):
    """A checkpoint shard that is not in the release's format (truncated, trailing data, bad payload)."""


class UnsafePickleError(ShardFormatError):
    """A shard whose pickle stream asks for something outside the allow-list (a global, a persistent id)."""


class LayoutMismatchError(GrokWeightsError, ValueError):
    """A shard whose contents disagree with the tensor spec the layout assigns to it."""


class ManifestError(GrokWeightsError, ValueError):
    """A manifest that is malformed, of an unknown schema version, or inconsistent with a request."""

    exit_code = 2


class VerificationError(GrokWeightsError):
    """A checkpoint that failed verification against its manifest."""


class InsufficientSpaceError(GrokWeightsError, OSError):
    """Not enough free disk space for what an operation is about to write."""


class NotRegularFileError(GrokWeightsError, OSError):
    """A path that should be a regular file is a FIFO, a directory, a device or a socket."""


class TorrentError(GrokWeightsError):
    """A torrent that cannot be used: bad metadata, unsafe file names, a failed swarm."""


class MeshError(GrokWeightsError, ValueError):
    """A mesh or a partition rule set that cannot shard the model as asked."""

    exit_code = 2


class StoreError(GrokWeightsError):
    """A resharded tensorstore store that is missing, incomplete or inconsistent."""


class SmokeError(GrokWeightsError):
    """A smoke test whose checks failed."""


class CrashError(GrokWeightsError):
    """Native code run in a child process died of a signal (``actual``: the signal's name), hung past its time
    limit, or exited without a result; the calling process is unharmed."""


class WriteError(GrokWeightsError, OSError):
    """A file could not be written (no space, too large for the file system, read-only, no permission, a folder
    that takes no new files such as ``/proc``); nothing was left under its name."""
