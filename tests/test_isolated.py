"""The child-process runner (grokweights._isolated): a native crash fails one call, one test, never the run.

The children here crash on purpose: they kill themselves with the signal a miscompiled or buggy native library
dies of (SIGILL, SIGSEGV), exactly as llama.cpp's AMX kernels do on a CPU they were not built for.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from grokweights._isolated import run_isolated, signal_name
from grokweights.errors import CrashError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def die_of(signum: int) -> None:
    """Kill the calling process with ``signum`` (no core file)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), signum)
    time.sleep(10)  # the signal is delivered before this returns


def add(a: int, b: int, *, times: int = 1) -> int:
    return (a + b) * times


def refuse(text: str) -> None:
    raise KeyError(text)


def hang() -> None:
    time.sleep(600)


@pytest.mark.parametrize("signum, name", [(signal.SIGILL, "SIGILL"), (signal.SIGSEGV, "SIGSEGV"),
                                          (signal.SIGABRT, "SIGABRT")])
def test_a_child_killed_by_a_signal_is_one_error_naming_it(signum, name):
    with pytest.raises(CrashError) as caught:
        run_isolated(die_of, signum, what="llama.cpp evaluating tiny.gguf", timeout=60, hint="rebuild it")
    message = str(caught.value)
    assert caught.value.actual == name
    assert f"llama.cpp evaluating tiny.gguf crashed: the child process running it died of {name} (" in message
    assert message.endswith("; rebuild it")


def test_results_and_exceptions_come_back():
    assert run_isolated(add, 2, 3, times=4, what="adding", timeout=60) == 20
    with pytest.raises(KeyError, match="no such tensor"):
        run_isolated(refuse, "no such tensor", what="refusing", timeout=60)


def test_a_hang_is_stopped_at_the_timeout():
    started = time.monotonic()
    with pytest.raises(CrashError, match="did not finish within 3 s"):
        run_isolated(hang, what="hanging", timeout=3)
    assert time.monotonic() - started < 30


def test_signal_names():
    assert signal_name(4) == "SIGILL (Illegal instruction)"
    assert signal_name(11).startswith("SIGSEGV (")
    assert signal_name(200) == "signal 200"


SUITE = '''
import os, signal
from grokweights._isolated import run_isolated
from grokweights.constants import LLAMA_CPP_CRASH_HINT


def crash():
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.kill(os.getpid(), signal.SIGILL)


def test_llama_cpp_crashes():
    {call}


def test_the_next_test_still_runs():
    assert True
'''


def _pytest(tmp_path, call: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE).replace("{call}", call))
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_suite.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))


def test_a_crash_in_the_runner_fails_one_test_and_the_run_goes_on(tmp_path):
    """What the llama.cpp tests do: the crash is reported by the one test, with its signal and the fix."""
    done = _pytest(tmp_path, 'run_isolated(crash, what="llama.cpp", timeout=120, hint=LLAMA_CPP_CRASH_HINT)')
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "CrashError: llama.cpp crashed: the child process running it died of SIGILL (Illegal instruction)" in out
    assert "GGML_NATIVE=OFF" in out and "--no-cache-dir" in out


def test_the_same_crash_in_process_ends_the_whole_run(tmp_path):
    """The reason for the runner: without it, SIGILL ends pytest itself and no test after it runs."""
    done = _pytest(tmp_path, "crash()")
    assert done.returncode == -signal.SIGILL, done.stdout + done.stderr
    assert "passed" not in done.stdout
