"""Multi-controller loading for real: two processes on localhost, 4 simulated CPU devices each.

Each process loads the same store onto the global 8-device mesh; it must read only the slices its own
devices hold (about half of the store) and its addressable data must equal the source checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

from grokweights.checkpoint.config import preset
from grokweights.checkpoint.manifest_ops import create_manifest
from grokweights.checkpoint.synth import synthesize
from grokweights.constants import LOCAL_MANIFEST_NAME
from grokweights.runtime.load import open as open_store
from grokweights.store.reshard import reshard

_WORKER = textwrap.dedent("""
    import json, os, sys
    import jax
    import numpy as np
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    port, pid, store, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from grokweights.checkpoint.config import preset
    from grokweights.checkpoint.layout import layout
    from grokweights.runtime.load import LoadStats, load
    from grokweights.checkpoint.shards import read_shard

    stats = LoadStats()
    params = load(store, "data=1,model=8", stats=stats)
    checked = 0
    for spec in layout(preset("tiny")):
        src, leaf = read_shard(os.path.join(ckpt, spec.file)), params[spec.path][spec.name]
        pairs = [(leaf, src)] if spec.kind == "array" else [
            (leaf.weight, src.weight),
            (leaf.scales, np.repeat(src.scales, leaf.scales.shape[-2] // src.scales.shape[-2], axis=-2))]
        for array, expected in pairs:
            for shard in array.addressable_shards:
                assert shard.device.process_index == pid
                assert np.array_equal(np.asarray(shard.data), expected[shard.index]), spec.key
                checked += 1
    print(json.dumps({"process": jax.process_index(), "local_devices": jax.local_device_count(),
                      "devices": jax.device_count(), "bytes_read": stats.bytes_read, "shards_checked": checked}))
    jax.distributed.shutdown()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_each_read_their_half(tmp_path):
    config = preset("tiny")
    synthesize(tmp_path, config, seed=7)
    create_manifest(tmp_path, name="tiny-mh", config=config).save(tmp_path / LOCAL_MANIFEST_NAME)
    store = tmp_path / "store"
    reshard(tmp_path, store, "data=1,model=8")
    total = open_store(store).plan.total_bytes
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(port), str(i), str(store),
                               str(tmp_path / "ckpt-0")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["local_devices"] == 4 and r["devices"] == 8 and r["shards_checked"] > 0 for r in results)
    # sharded arrays split between the processes; only the few small replicated arrays are read by both
    plan = open_store(store).plan
    replicated = sum(a.nbytes for a in plan.arrays if plan.factors(a) == (1,) * len(a.shape))
    for r in results:
        assert r["bytes_read"] == (total - replicated) // 2 + replicated
        assert 0.45 * total < r["bytes_read"] < 0.6 * total
