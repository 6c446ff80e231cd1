"""One JAX process of the multi-host load: load this host's slices of a store, run the forward pass, report.

Run inside a host (``ip netns exec``) with one CPU device::

    python -m tests.cluster.worker --coordinator IP:PORT --processes N --process I --store S --config C --out O

or, for the single-process reference, without ``--coordinator`` and with a checkpoint or store as ``--store``.
Writes ``O.json`` (bytes read, devices) and, in process 0, ``O.npy`` (the float32 logits of the whole batch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def tokens(vocab: int, batch: int = 2, length: int = 16) -> np.ndarray:
    """A fixed batch of token ids in 1..vocab-1."""
    return np.random.default_rng(1234).integers(1, vocab, size=(batch, length)).astype(np.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--coordinator")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process", type=int, default=0)
    parser.add_argument("--store", required=True)
    parser.add_argument("--config", required=True, help="model config JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.processes,
                                   process_id=args.process, initialization_timeout=120)
    from jax.experimental import multihost_utils

    import grokweights as gw
    try:
        from grokweights.runtime.load import LoadStats
    except ImportError:  # the layout before the packages of the house move
        from grokweights.load import LoadStats

    config = gw.ModelConfig.from_json(Path(args.config).read_text())
    stats = LoadStats()
    start = time.perf_counter()
    params = gw.load(args.store, f"data=1,model={jax.device_count()}", config=config, stats=stats)
    loaded = time.perf_counter() - start
    logits = gw.forward(params, tokens(config.vocab_size), config, dtype="float32")
    if args.coordinator:
        logits = multihost_utils.process_allgather(logits, tiled=True)
    full = np.asarray(logits)
    seconds = time.perf_counter() - start
    if jax.process_index() == 0:
        np.save(f"{args.out}.npy", full.astype(np.float32))
    report = {"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
              "local_devices": jax.local_device_count(), "bytes_read": stats.bytes_read,
              "load_seconds": round(loaded, 2), "seconds": round(seconds, 2), "logits_shape": list(full.shape)}
    Path(f"{args.out}.json").write_text(json.dumps(report))
    if args.coordinator:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
