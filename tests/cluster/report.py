"""The results of a cluster run: targets checked, a Markdown table, a JSON record and a PNG plot."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .scenarios import Run

SWARM_TARGET = 1.5  # all N hosts of the swarm complete within this multiple of one host alone
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
        big = swarms[-1]
        ratio = big.seconds / single.seconds
        out.append((f"swarm N={big.n} <= {SWARM_TARGET}x one host", ratio <= SWARM_TARGET,
                    f"{big.seconds:.1f} s / {single.seconds:.1f} s = {ratio:.2f}x"))
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
            rel = run.notes["rel_l2"]
            out.append(("multi-host logits = single process (rel L2 <= 1e-5)", rel <= 1e-5, f"{rel:.2e}"))
    out.append(("every host verified, every fault scenario correct", all(r.ok for r in runs),
                "; ".join(f"{r.name}: {p}" for r in runs for p in r.problems) or "all ok"))
    return out


def table(runs: list[Run]) -> str:
    """One Markdown row per scenario."""
    single = next((r.seconds for r in runs if r.name == "one-host"), None)
    rows = ["| scenario | N | all done (s) | x one host | per host (s) | MB down per host (payload / wire) | ok |",
            "|---|---|---|---|---|---|---|"]
    for r in runs:
        ratio = f"{r.seconds / single:.2f}" if single and not r.name.startswith("load-") else ""
        per = f"{min(r.host_seconds):.1f}-{max(r.host_seconds):.1f}" if r.host_seconds else ""
        down = ""
        if r.payload and r.wire:
            down = f"{_mb(max(r.payload))} / {_mb(max(r.wire))}"
        elif r.payload:
            down = f"read {_mb(max(r.payload))}"
        rows.append(f"| {r.name} | {r.n} | {r.seconds:.1f} | {ratio} | {per} | {down} | {'yes' if r.ok else 'NO'} |")
    return "\n".join(rows)


def write(runs: list[Run], out: Path, meta: dict) -> None:
    """results.json and completion.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"meta": meta, "runs": [asdict(r) for r in runs],
              "targets": [{"target": t, "met": m, "figures": f} for t, m, f in targets(runs)]}
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    plot(runs, out / "completion.png", meta)


def plot(runs: list[Run], path: Path, meta: dict) -> None:
    """Completion time of all hosts against N, origin only and swarm, with one host alone as reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = next((r.seconds for r in runs if r.name == "one-host"), None)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for prefix, label, style in (("origin-", "origin only", "o-"), ("swarm-", "swarm", "s-")):
        points = sorted((r.n, r.seconds) for r in runs if r.name.startswith(prefix))
        if single and prefix == "origin-":
            points = sorted({(1, single), *points})
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    if single:
        ns = sorted({r.n for r in runs if r.name.startswith(("origin-", "swarm-"))} | {1})
        ax.plot(ns, [single * n for n in ns], ":", color="grey", label="N x one host")
        ax.axhline(SWARM_TARGET * single, ls="--", color="green", lw=1, label=f"{SWARM_TARGET} x one host (target)")
    ax.set_xlabel("hosts fetching (N)")
    ax.set_ylabel("seconds until every host has verified data")
    ax.set_title(f"{meta.get('data_mb', '?')} MB to N hosts over {meta.get('rate_mbit', '?')} Mbit/s links")
    ax.set_xticks(sorted({r.n for r in runs if r.name.startswith(("origin-", "swarm-"))} | {1}))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
