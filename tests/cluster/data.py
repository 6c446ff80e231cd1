"""The synthetic checkpoint the cluster moves: a Grok-1-shaped model sized for the links, its manifest and torrent.

The widths divide by 3, 4 and 8 so the same checkpoint loads onto a ``model=3``, ``model=4`` or ``model=8``
mesh (one host per device). ``FULL`` is ~292 MB: ~12 s for one host over a 200 Mbit/s link.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import grokweights as gw

#: the torrent's top folder (and the checkpoint's folder name on every host)
NAME = "grok-cluster"


def full_config() -> gw.ModelConfig:
    """8 layers (so 2, 4 or 8 hosts split them evenly), 4 experts, 8 scale blocks: ~292 MB."""
    return gw.ModelConfig(num_layers=8, emb_size=768, num_q_heads=12, num_kv_heads=6, key_size=64, num_experts=4,
                          num_selected_experts=2, widening_factor=6, vocab_size=16384, scale_blocks=8)


def short_config() -> gw.ModelConfig:
    """3 layers (one per host of the CI run), the same structure at half width: ~48 MB."""
    return gw.ModelConfig(num_layers=3, emb_size=384, num_q_heads=6, num_kv_heads=3, key_size=64, num_experts=4,
                          num_selected_experts=2, widening_factor=6, vocab_size=16384, scale_blocks=8)


@dataclass(frozen=True)
class Dataset:
    """Where the origin's copy, its manifest and its torrent are, and what they hold."""

    root: Path  # the torrent's top folder: root/ckpt-0/tensor*
    manifest: Path
    torrent: Path
    config: gw.ModelConfig
    total_bytes: int
    layer_bytes: dict[int, int]  # decoder layer -> bytes of its shard files
    common_bytes: int  # shards of no layer (embedding, final norm): every host needs them

    def share(self, layers: list[int]) -> int:
        """Bytes a host that serves ``layers`` needs."""
        return self.common_bytes + sum(self.layer_bytes[i] for i in layers)


def make(folder: Path, config: gw.ModelConfig, *, seed: int = 0) -> Dataset:
    """Synthesize the checkpoint under ``folder``, hash it into a manifest and make its torrent."""
    root = folder / NAME
    gw.synthesize(root, config, seed=seed)
    manifest = gw.create_manifest(root, name=f"cluster-seed{seed}", config=config)
    manifest_path = folder / "manifest.json"
    manifest.save(manifest_path)
    torrent = gw.create_torrent(root, folder / f"{NAME}.torrent", force=True)
    layer_bytes: dict[int, int] = {}
    common = 0
    for spec in gw.layout(config):
        size = (root / "ckpt-0" / Path(spec.file).name).stat().st_size
        if spec.layer is None:
            common += size
        else:
            layer_bytes[spec.layer] = layer_bytes.get(spec.layer, 0) + size
    total = common + sum(layer_bytes.values())
    return Dataset(root, manifest_path, Path(torrent), config, total, layer_bytes, common)


def split_layers(num_layers: int, hosts: int) -> list[list[int]]:
    """Contiguous layer ranges, one per host, as in a pipeline-parallel split."""
    per, extra = divmod(num_layers, hosts)
    out, start = [], 0
    for i in range(hosts):
        count = per + (1 if i < extra else 0)
        out.append(list(range(start, start + count)))
        start += count
    return out


def verify_copy(dataset: Dataset, copy_root: Path, layers: list[int] | None = None) -> list[str]:
    """sha256 of every shard of ``copy_root`` that a host serving ``layers`` holds, against the manifest.

    Returns the problems (empty when the copy is correct). Independent of the fetch's own verification.
    """
    entries = json.loads(dataset.manifest.read_text())["shards"]
    problems = []
    for spec in gw.layout(dataset.config):
        if layers is not None and spec.layer is not None and spec.layer not in layers:
            continue
        name = Path(spec.file).name
        path = copy_root / "ckpt-0" / name
        expected = next((e.get("sha256") for e in entries if Path(e["path"]).name == name), None)
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif expected and _sha256(path) != expected:
            problems.append(f"{name}: sha256 differs")
    return problems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
