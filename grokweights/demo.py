"""The end-to-end demo on an embedded default: every stage of the pipeline on a tiny synthetic model.

Stages run in a work folder (a fresh temporary one unless given) and each reports bytes, seconds and a
result; the demo fails (raises) at the first stage whose check fails::

    WORK/
        source/ckpt-0/...            synth: the "release" (tiny preset, official format)
        source/grokweights-manifest.json
        corrupted/ckpt-0/...         a copy with one byte flipped in one shard
        fetched/source/ckpt-0/...    seeded from source/ by one libtorrent session, fetched by magnet
                                     link into another, over 127.0.0.1
        store/                       the fetched checkpoint resharded for an 8-device mesh (zarr3)
        streamed-store/              fetch --reshard --discard-source: the store streamed in one pass
        export/tiny.gguf             that store exported as GGUF for llama.cpp (run by llama.cpp if installed)

then the store is loaded onto 8 (simulated CPU) devices and a forward pass is smoke-tested on them.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._isolated import run_isolated
from .checkpoint.config import preset
from .checkpoint.files import make_folder
from .constants import CKPT_DIRNAME, LLAMA_CPP_CRASH_HINT, LOCAL_MANIFEST_NAME
from .errors import SmokeError, StoreError, TorrentError, UsageError, VerificationError

__all__ = ["run_demo", "DemoStage", "DemoResult", "DEMO_MESH", "DEMO_DEVICES"]

#: the mesh the demo reshards for and loads onto, and the CPU devices it simulates for it.
DEMO_MESH = "data=1,model=8"
DEMO_SMOKE_MESH = "data=2,model=4"
DEMO_DEVICES = 8


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
    from dataclasses import replace

    from .checkpoint.manifest import Sources
    from .checkpoint.manifest_ops import create_manifest
    from .checkpoint.synth import synthesize
    from .checkpoint.torrentfile import read_torrent
    from .checkpoint.verify import verify
    from .torrent import create_torrent

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
        # the shards against sha256 and against the v1 pieces of a torrent of them (pieces span files)
        (work / "pieces").mkdir(parents=True, exist_ok=True)
        torrent = create_torrent(source / CKPT_DIRNAME, work / "pieces" / "ckpt-0.torrent", piece_size=16 * 1024,
                                 force=True)  # the demo's own work folder: a rerun replaces it
        meta = read_torrent(torrent)
        m = replace(state["manifest"], sources=Sources(infohash_v1=meta.infohash_v1))
        report = verify(source, m, deep=True, torrent=meta)
        if not report.strict_ok or {r.method for r in report.results} != {"sha256+pieces"}:
            raise VerificationError(f"demo: the fresh checkpoint failed verification: {report.counts()}")
        return report.bytes_hashed, (f"all {len(report.results)} shards ok: sha256, the {meta.num_pieces} SHA-1 "
                                     f"pieces of torrent {meta.infohash_v1[:12]}…, and headers")

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


def _fetch_stage(run: _Runner, work: Path, source: Path, manifest: Any) -> Path:
    from .torrent import Seeder, fetch

    state: dict[str, Path] = {}

    def seed_and_fetch() -> tuple[int, str]:
        with Seeder(source, listen="127.0.0.1:0", discovery=False) as seeder:
            report = fetch(seeder.magnet, work / "fetched", manifest=manifest, listen="127.0.0.1:0",
                           discovery=False, stall_timeout=120)
        if not report.ok or report.checkpoint is None:
            raise TorrentError(f"demo: the fetch over loopback did not verify: {report.verification}")
        state["checkpoint"] = Path(report.checkpoint)
        return report.downloaded_bytes, (f"seeded on 127.0.0.1, fetched by magnet link ({report.infohash[:12]}…), "
                                         f"{len(report.files)} files verified")

    def fetch_reshard() -> tuple[int, str]:
        from .stream import fetch_and_reshard

        with Seeder(source, listen="127.0.0.1:0", discovery=False) as seeder:
            report = fetch_and_reshard(seeder.magnet, work / "streamed", work / "streamed-store", DEMO_MESH,
                                       manifest=manifest, discard_source=True, listen="127.0.0.1:0",
                                       discovery=False, stall_timeout=120)
        if not report.ok or not report.discarded:
            raise TorrentError(f"demo: fetch --reshard did not complete: {report.to_dict()['fetch']['files'][:1]}")
        return report.bytes_converted, (f"{len(report.converted)} shards converted as they arrived into "
                                        f"{report.arrays} arrays for mesh {DEMO_MESH}; sources discarded")

    run.stage("seed + fetch by magnet", seed_and_fetch)
    run.stage("fetch + reshard in one pass", fetch_reshard)
    return state["checkpoint"]


def _store_stages(run: _Runner, work: Path, checkpoint: Path, manifest: Any) -> None:
    from .runtime.load import LoadStats, load
    from .runtime.smoke import smoke
    from .store.reshard import reshard

    store = work / "store"

    def reshard_stage() -> tuple[int, str]:
        report = reshard(checkpoint, store, DEMO_MESH, manifest=manifest)
        return report.bytes_written, f"{len(report.written)} zarr3 arrays for mesh {DEMO_MESH}"

    def load_stage() -> tuple[int, str]:
        import jax

        stats = LoadStats()
        params = load(store, DEMO_MESH, stats=stats)
        leaves = jax.tree_util.tree_leaves(params)
        devices = {d for leaf in leaves for d in leaf.sharding.device_set}
        if len(devices) != DEMO_DEVICES:
            raise StoreError(f"demo: loaded onto {len(devices)} devices, expected {DEMO_DEVICES}")
        return stats.bytes_read, f"{len(leaves)} sharded jax.Arrays on {len(devices)} devices"

    def smoke_stage() -> tuple[int, str]:
        report = smoke(store, mesh=DEMO_SMOKE_MESH, check_mesh="single")
        if not report.ok:
            failed = [c.to_dict() for c in report.checks if not c.ok]
            raise SmokeError(f"demo: smoke checks failed: {failed}")
        top = report.top[0][0]
        return report.load_bytes, (f"forward on mesh {DEMO_SMOKE_MESH} (store laid out for {DEMO_MESH}): "
                                   f"{len(report.checks)} checks passed "
                                   f"(top next token {top.id}), {report.tokens_per_second:.0f} tokens/s")

    for name, fn in (("reshard", reshard_stage), ("load", load_stage), ("smoke", smoke_stage)):
        run.stage(name, fn)


def _export_stage(run: _Runner, work: Path, store: Path, checkpoint: Path, manifest: Any) -> None:
    """GGUF of the tiny model from the store it streamed (only a store is left after ``--discard-source``);
    llama.cpp (llama-cpp-python), when installed, must agree with ``grokweights.forward`` on the next token."""
    from .engines import export

    tokens = [5, 17, 301, 42, 7, 99]

    def export_stage() -> tuple[int, str]:
        import numpy as np

        report = export(store, work / "export" / "tiny.gguf", format="gguf", dtype="f32", config=manifest.config,
                        force=True)
        done = f"{len(report.tensors)} tensors from {store.name}/ -> {Path(report.files[0]).name}"
        if importlib.util.find_spec("llama_cpp") is None:
            return report.bytes, f"{done} (llama-cpp-python not installed: not run)"
        # in a child process: a crash of llama.cpp (SIGILL on a CPU it was not built for) fails this stage only
        theirs = run_isolated(_llama_next_token, report.files[0], tokens, what=f"llama.cpp running {report.files[0]}",
                              timeout=300, hint=LLAMA_CPP_CRASH_HINT)
        ours = int(np.argmax(_forward_f32(checkpoint, manifest.config, tokens)[0, -1]))
        if theirs != ours:
            raise SmokeError(f"demo: llama.cpp predicts token {theirs}, grokweights.forward {ours}")
        return report.bytes, f"{done}; llama.cpp and grokweights.forward agree: next token {ours}"

    run.stage("export gguf", export_stage)


def _llama_next_token(path: str, tokens: list[int]) -> int:
    """llama.cpp's next token after ``tokens`` (run by :func:`run_isolated`, in a child process)."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=path, n_ctx=32, n_threads=2, logits_all=True, verbose=False)
    llm.eval(tokens)
    return int(np.argmax(llm.scores[len(tokens) - 1]))


def _forward_f32(checkpoint: Path, config: Any, tokens: list[int]) -> Any:
    import jax.numpy as jnp
    import numpy as np

    from .model.transformer import forward
    from .runtime.load import load

    return np.asarray(forward(load(checkpoint, config=config), np.array([tokens]), config, dtype=jnp.float32))


#: what a demo writes in its work folder: a rerun in the same folder replaces exactly these
DEMO_PARTS = ("source", "pieces", "corrupted", "fetched", "streamed", "streamed-store", "store", "export")
#: the file that marks a folder as a demo's work folder
DEMO_MARKER = ".grokweights-demo"


def prepare_workdir(work: Path) -> None:
    """Make ``work`` ready for a run: new, empty, or a previous demo's (its parts are removed, anything else the
    user put there is kept); any other non-empty folder is refused before anything is written.

    Raises:
        UsageError: ``work`` is not a folder, or holds files and is not a demo's work folder.
    """
    make_folder(work, what="--workdir", fix="give a new or empty folder, or a previous demo's, for the demo's files")
    entries = sorted(p.name for p in work.iterdir())
    if entries and not (work / DEMO_MARKER).is_file():
        raise UsageError(f"{work}: --workdir holds {len(entries)} {'entry' if len(entries) == 1 else 'entries'} "
                         f"({', '.join(entries[:3])}"
                         f"{', ...' if len(entries) > 3 else ''}) and is not a demo's work folder; give a new or "
                         "empty folder (a previous demo's is reused)", path=work,
                         expected="a new or empty folder, or a previous demo's", actual=f"{len(entries)} entries")
    for name in DEMO_PARTS:  # a previous run's: replaced, never followed through a link
        part = work / name
        if part.is_dir() and not part.is_symlink():
            shutil.rmtree(part)
        elif part.is_symlink() or part.exists():
            part.unlink()
    (work / DEMO_MARKER).write_text("the work folder of `grokweights demo`: a rerun here replaces its parts\n")


def run_demo(workdir: str | Path | None = None, *, seed: int = 0,
             log: Callable[[str], None] = lambda s: None) -> DemoResult:
    """Run every stage of the pipeline on a tiny synthetic checkpoint; raises at the first failure.

    Simulates 8 CPU devices for the load and smoke stages when jax is not imported yet (accelerators,
    where present, are used as they are).
    """
    import sys

    if "jax" not in sys.modules:
        from .runtime.devices import simulate_cpu_devices

        simulate_cpu_devices(DEMO_DEVICES)
    work = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="grokweights-demo-"))
    prepare_workdir(work)
    run = _Runner(work, log)
    source, manifest = _core_stages(run, work, seed)
    checkpoint = _fetch_stage(run, work, source, manifest)
    _store_stages(run, work, checkpoint, manifest)
    _export_stage(run, work, work / "streamed-store", checkpoint, manifest)
    return run.result
