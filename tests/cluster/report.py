"""The results of a cluster run: targets checked, a Markdown table, a JSON record and the plots; publishing them."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from . import multihost, plots
from .scenarios import Run

SWARM_TARGET = plots.SWARM_TARGET  # all N hosts of the swarm complete within this multiple of one host alone
SWARM2_TARGET = 1.15  # ... and two hosts within this one
LOGITS_TARGET = multihost.LOGITS_TOLERANCE  # rel. L2 of the multi-host float32 logits against one process
BYTES_TARGET = 1.1  # bytes a host downloads (or a process reads) within this multiple of its share


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def targets(runs: list[Run]) -> list[tuple[str, bool, str]]:
    """(target, met, figures) for each target the runs can be checked against."""
    by = {r.name: r for r in runs}
    single = by.get("one-host")
    out = []
    swarms = sorted((r for r in runs if r.name.startswith("swarm-") and r.n > 1), key=lambda r: r.n)
    if single and swarms:
        checked = [(swarms[-1], SWARM_TARGET)]
        checked += [(r, SWARM2_TARGET) for r in swarms if r.n == 2 and r is not swarms[-1]]
        for swarm, limit in checked:
            ratio = swarm.seconds / single.seconds
            copies = swarm.origin_sent / max(sum(single.share), 1)
            out.append((f"swarm N={swarm.n} <= {limit}x one host", ratio <= limit,
                        f"{swarm.seconds:.1f} s / {single.seconds:.1f} s = {ratio:.2f}x; the origin sent "
                        f"{copies:.2f} copies"))
    for run in runs:
        if run.name.startswith("layers-"):
            worst = max(p / s for p, s in zip(run.payload, run.share))
            wire = max(w / s for w, s in zip(run.wire, run.share))
            out.append((f"per-host layers: payload <= {BYTES_TARGET}x share", worst <= BYTES_TARGET,
                        f"worst {worst:.3f}x payload, {wire:.3f}x on the wire (TCP/IP headers included)"))
        if run.name.startswith("load-"):
            worst = max(p / s for p, s in zip(run.payload, run.share))
            out.append((f"multi-host load: bytes read <= {BYTES_TARGET}x share", worst <= BYTES_TARGET,
                        f"worst {worst:.3f}x ({_mb(max(run.payload))} MB of a {_mb(run.notes['store_bytes'])} MB "
                        f"store, {run.n} processes)"))
            rel, top1 = run.notes["rel_l2"], run.notes["top1_agree"]
            out.append((f"multi-host float32 logits = one process on one device (rel L2 <= {LOGITS_TARGET:g}, "
                        "same top-1 everywhere)", rel <= LOGITS_TARGET and top1 == 1.0,
                        f"rel L2 {rel:.2e}, top-1 identical at {top1:.1%} of positions; against one process on "
                        f"the same {run.n}-device mesh: rel L2 {run.notes['rel_l2_same_mesh']:.2e}"))
    out.append(("every host verified, every fault scenario correct", all(r.ok for r in runs),
                "; ".join(f"{r.name}: {p}" for r in runs for p in r.problems) or "all ok"))
    return out


def table(runs: list[Run]) -> str:
    """One Markdown row per scenario."""
    single = next((r for r in runs if r.name == "one-host"), None)
    rows = ["| scenario | N | all done (s) | x one host | per host (s) | MB down per host (payload / wire) "
            "| from the origin / other hosts (MB, mean) | origin sent (copies) | ok |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        ratio = f"{r.seconds / single.seconds:.2f}" if single and not r.name.startswith("load-") else ""
        per = f"{min(r.host_seconds):.1f}-{max(r.host_seconds):.1f}" if r.host_seconds else ""
        down = ""
        if r.payload and r.wire:
            down = f"{_mb(max(r.payload))} / {_mb(max(r.wire))}"
        elif r.payload:
            down = f"read {_mb(max(r.payload))}"
        sources = copies = ""
        if r.from_origin:
            sources = f"{_mb(sum(r.from_origin) / len(r.from_origin))} / {_mb(sum(r.from_peers) / len(r.from_peers))}"
            copies = f"{r.origin_sent / r.share[0]:.2f}" if r.share and not r.name.startswith("layers-") else ""
        rows.append(f"| {r.name} | {r.n} | {r.seconds:.1f} | {ratio} | {per} | {down} | {sources} | {copies} "
                    f"| {'yes' if r.ok else 'NO'} |")
    return "\n".join(rows)


def write(runs: list[Run], out: Path, meta: dict) -> None:
    """results.json, completion.png and timeline.png (the largest swarm) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"meta": meta, "runs": [asdict(r) for r in runs],
              "targets": [{"target": t, "met": m, "figures": f} for t, m, f in targets(runs)]}
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    plots.completion(runs, out / "completion.png", meta)
    swarms = sorted((r for r in runs if r.name.startswith("swarm-")), key=lambda r: r.n)
    if swarms:
        plots.timeline(swarms[-1], out / "timeline.png", meta)


#: what ``--publish`` copies into the tracked folder
PUBLISHED = ("results.json", "completion.png", "timeline.png")


def publish(out: Path, folder: Path) -> None:
    """Copy the run's results and plots from ``out`` into ``folder`` (the tracked docs/cluster)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED:
        if (out / name).is_file():
            shutil.copyfile(out / name, folder / name)
