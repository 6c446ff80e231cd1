"""The end-to-end demo on an embedded default: every stage of the pipeline on a tiny synthetic model.

Stages run in a work folder (a fresh temporary one unless given) and each reports bytes, seconds and a
result; the demo fails (raises) at the first stage whose check fails::

    WORK/
        source/ckpt-0/...            synth: the "release" (tiny preset, official format)
        source/grokweights-manifest.json
        corrupted/ckpt-0/...         a copy with one byte flipped in one shard
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import preset
from .constants import CKPT_DIRNAME, LOCAL_MANIFEST_NAME
from .errors import VerificationError

__all__ = ["run_demo", "DemoStage", "DemoResult"]


@dataclass(frozen=True)
class DemoStage:
    """One stage's outcome."""

    name: str
    seconds: float
    bytes: int
    result: str


@dataclass
class DemoResult:
    workdir: Path
    stages: list[DemoStage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"workdir": str(self.workdir), "stages": [s.__dict__ for s in self.stages]}


class _Runner:
    def __init__(self, workdir: Path, log: Callable[[str], None]) -> None:
        self.result = DemoResult(workdir)
        self.log = log

    def stage(self, name: str, fn: Callable[[], tuple[int, str]]) -> None:
        self.log(f"== {name}")
        start = time.perf_counter()
        nbytes, outcome = fn()
        stage = DemoStage(name, time.perf_counter() - start, nbytes, outcome)
        self.result.stages.append(stage)
        self.log(f"   {outcome} ({stage.seconds:.2f}s)")


def _core_stages(run: _Runner, work: Path, seed: int) -> tuple[Path, Any]:
    from .manifest_ops import create_manifest
    from .synth import synthesize
    from .verify import verify

    config = preset("tiny")
    source = work / "source"
    state: dict[str, Any] = {}

    def synth() -> tuple[int, str]:
        ckpt = synthesize(source, config, seed=seed)
        files = sorted(ckpt.iterdir())
        return sum(f.stat().st_size for f in files), f"{len(files)} shards in the official format at {ckpt}"

    def manifest() -> tuple[int, str]:
        state["manifest"] = m = create_manifest(source, name="demo-tiny", config=config)
        path = m.save(source / LOCAL_MANIFEST_NAME)
        return m.total_size, f"{len(m.shards)} shards hashed into {path.name}"

    def verify_ok() -> tuple[int, str]:
        report = verify(source, state["manifest"], deep=True)
        if not report.strict_ok:
            raise VerificationError(f"demo: the fresh checkpoint failed verification: {report.counts()}")
        return report.bytes_hashed, f"all {len(report.results)} shards ok (sha256 + headers)"

    def verify_corrupt() -> tuple[int, str]:
        copy = work / "corrupted"
        shutil.copytree(source, copy)
        victim = copy / CKPT_DIRNAME / "tensor00005_000"
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
        report = verify(copy, state["manifest"])
        bad = [r.path for r in report.failures]
        if bad != [f"{CKPT_DIRNAME}/{victim.name}"]:
            raise VerificationError(f"demo: expected exactly {victim.name} to fail, got {bad}")
        return report.bytes_hashed, f"one flipped bit found: {bad[0]} ({report.failures[0].status} mismatch)"

    for name, fn in (("synth", synth), ("manifest create", manifest), ("verify", verify_ok),
                     ("verify a corrupted copy", verify_corrupt)):
        run.stage(name, fn)
    return source, state["manifest"]


def run_demo(workdir: str | Path | None = None, *, seed: int = 0,
             log: Callable[[str], None] = lambda s: None) -> DemoResult:
    """Run every stage of the pipeline on a tiny synthetic checkpoint; raises at the first failure."""
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="grokweights-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    run = _Runner(work, log)
    _core_stages(run, work, seed)
    return run.result
