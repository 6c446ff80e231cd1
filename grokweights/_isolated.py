"""Run a function in a child process, so that a crash of native code ends the child, not the caller.

A third-party native library (llama.cpp, through llama-cpp-python) can die of a signal: SIGILL where it was
compiled for instructions this CPU lacks, SIGSEGV on a bug. In-process, that ends the whole interpreter (a test
run, the demo) without a word about which step failed. :func:`run_isolated` runs ``fn(*args, **kwargs)`` in a
fresh interpreter (``spawn``: nothing of the caller's threads or JAX state is inherited), returns its result,
re-raises its Python exception, and turns a death by signal, a hang past ``timeout`` or an exit without a
result into one :class:`~grokweights.errors.CrashError` naming the step, the signal and ``hint``.

``fn`` must be importable by name (a module-level function) and its arguments and result picklable.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from typing import Any

from .errors import CrashError

__all__ = ["run_isolated", "signal_name"]


def signal_name(number: int) -> str:
    """``SIGILL (Illegal instruction)`` for 4; ``signal N`` for a number Python does not name."""
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"signal {number}"
    description = signal.strsignal(sig)
    return f"{sig.name} ({description})" if description else sig.name


def _child(conn: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        outcome = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent, which re-raises it
        outcome = ("raised", exc)
    try:
        conn.send(outcome)
    except Exception as exc:  # noqa: BLE001 - the result or the exception would not pickle
        conn.send(("raised", CrashError(f"the child's {outcome[0]} value could not be sent back ({exc})")))
    conn.close()


def run_isolated(fn: Callable[..., Any], *args: Any, what: str, timeout: float = 600.0, hint: str = "",
                 **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a child process; its result, or its exception raised here.

    Args:
        fn: a module-level function (the child imports it by name).
        what: the step, for the error message (``"llama.cpp evaluating tiny.gguf"``).
        timeout: seconds before the child is killed.
        hint: what the user can do about a crash, appended to the message.

    Raises:
        CrashError: the child died of a signal (``actual`` is the signal's name, e.g. ``SIGILL``), ran past
            ``timeout``, or exited without a result.
    """
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, fn, args, kwargs), daemon=True)
    proc.start()
    sender.close()  # the child holds the only writer: its death is an end-of-file here
    outcome = None
    try:
        if receiver.poll(timeout):
            try:
                outcome = receiver.recv()
            except EOFError:
                pass
        else:
            proc.kill()
            proc.join(10)
            raise CrashError(f"{what} did not finish within {timeout:g} s and was stopped" + _then(hint),
                             expected=f"a result within {timeout:g} s", actual="timeout")
    finally:
        receiver.close()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(10)
    if outcome is None:
        code = proc.exitcode
        if code is not None and code < 0:
            name = signal_name(-code)
            raise CrashError(f"{what} crashed: the child process running it died of {name}" + _then(hint),
                             expected="a result", actual=name.split()[0])
        raise CrashError(f"{what} ended without a result (exit status {code})" + _then(hint),
                         expected="a result", actual=f"exit status {code}")
    kind, value = outcome
    if kind == "raised":
        raise value
    return value


def _then(hint: str) -> str:
    return f"; {hint}" if hint else ""
