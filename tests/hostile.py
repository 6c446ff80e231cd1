"""The shared runner of the hostile-input suite (tests/test_hostile_*.py).

``run_cli`` runs ``python -m grokweights ARGS`` in a fresh interpreter under an address-space limit and a timeout;
``assert_clean_failure`` checks what every hostile case must give: exit code 1 or 2, exactly one error line that
names the file (or option) and the fix, and no traceback. ``tree_state`` / ``assert_tree_unchanged`` check that
nothing was written (or changed) outside the destination.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent

#: the prefixes of the one error line: ours (GrokWeightsError) and click's usage errors.
ERROR_PREFIXES = ("grokweights: error:", "Error:")
#: the prefix of the lines `inspect` reports each bad file with.
PROBLEM_PREFIXES = ("problem:",)


class CliResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _limits(memory: int | None):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return apply


def run_cli(args, *, cwd=None, env: dict | None = None, timeout: float = 60, memory: int | None = 2 << 30,
            stdin: str | None = None, wrap: list[str] | None = None) -> CliResult:
    """Run ``grokweights ARGS`` in a subprocess under ``memory`` bytes of address space and ``timeout`` seconds.

    Returns ``(returncode, stdout, stderr)``. A run past ``timeout`` fails the test (the process group is killed).
    ``env`` adds to (a value of None removes from) the current environment; GROKWEIGHTS_DEBUG is always removed
    so errors print as users see them. ``wrap`` is a command that runs the CLI (e.g. ``["prlimit", "--fsize=N",
    "--"]``): it is given the CLI's command line as its last arguments.
    """
    full_env = {**os.environ, "GROKWEIGHTS_DISABLE_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    full_env.pop("GROKWEIGHTS_DEBUG", None)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = str(value)
    command = [*(wrap or []), sys.executable, "-m", "grokweights", *[str(a) for a in args]]
    try:
        done = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                              input=stdin if stdin is not None else "", preexec_fn=_limits(memory),
                              check=False, errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"grokweights {' '.join(command[len(wrap or []) + 3:])} ran past {timeout} s "
                             f"(stderr so far: {exc.stderr!r:.2000})") from None
    return CliResult(done.returncode, done.stdout, done.stderr)


def error_lines(result: CliResult, prefixes=ERROR_PREFIXES) -> list[str]:
    """The error lines of a run's stderr (ours and click's; ``prefixes`` says which)."""
    return [line for line in result.stderr.splitlines() if line.startswith(tuple(prefixes))]


def assert_clean_failure(result: CliResult, *, names=(), fix=(), codes=(1, 2), prefixes=ERROR_PREFIXES) -> str:
    """Assert a clean refusal: exit code in ``codes``, no traceback, one error line containing every string of
    ``names`` (the file or option) and of ``fix`` (words of the remedy). Returns the error line.

    ``prefixes`` are what the error line starts with (``PROBLEM_PREFIXES`` for the per-file lines of ``inspect``).
    """
    returncode, stdout, stderr = result
    shown = f"exit {returncode}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
    assert returncode in codes, f"expected exit code in {codes}; {shown}"
    for marker in ("Traceback (most recent call last)", "Segmentation fault", "Fatal Python error"):
        assert marker not in stderr and marker not in stdout, f"{marker!r} printed; {shown}"
    lines = error_lines(result, prefixes)
    assert len(lines) == 1, f"expected exactly one error line; {shown}"
    line = lines[0]
    assert len(line) < 2000, f"error line of {len(line)} characters (unbounded?); {shown}"
    for want in [*_as_tuple(names), *_as_tuple(fix)]:
        assert str(want) in line, f"{want!r} not in the error line {line!r}; {shown}"
    return line


def _as_tuple(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        return (value,)
    return tuple(value)


def tree_state(root) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (relative) with its size and mtime (folders: size -1)."""
    root = Path(root)
    state: dict[str, tuple[int, int]] = {}
    if not root.exists():
        return state
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        size = st.st_size if path.is_file() and not path.is_symlink() else -1
        state[str(path.relative_to(root))] = (size, st.st_mtime_ns)
    return state


def assert_tree_unchanged(root, before: dict[str, tuple[int, int]], *, ignore=()) -> None:
    """Assert nothing under ``root`` was created, removed or changed since ``before`` (paths in ``ignore`` and
    below them may change)."""
    after = tree_state(root)

    def kept(name: str) -> bool:
        return not any(name == skip or name.startswith(f"{skip}/") for skip in ignore)

    changed = sorted(name for name in set(before) | set(after)
                     if kept(name) and before.get(name) != after.get(name))
    assert not changed, f"changed under {root}: {changed[:20]}"
