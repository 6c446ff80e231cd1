"""The cluster run's figures: completion time against N beside where each host's bytes came from, and a timeline.

- ``completion.png``: left, seconds until every host verified, against N (origin only, swarm, N x one host,
  the target); right, for each swarm, the payload each host downloaded from the origin and from other hosts
  (stacked), with the dataset's size and the copies the origin sent;
- ``timeline.png``: the largest swarm over time: every link's download and upload rate, the origin's
  uplink on its own, and each host's bytes from the origin and from peers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SWARM_TARGET = 1.5


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def completion(runs: list, path: Path, meta: dict) -> None:
    """``completion.png`` (see the module docstring)."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.8, 4.4), dpi=110, gridspec_kw={"width_ratios": [1, 1.3]})
    _completion_axes(ax, runs, meta)
    _sources_axes(bx, runs, meta)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _completion_axes(ax: Any, runs: list, meta: dict) -> None:
    single = next((r.seconds for r in runs if r.name == "one-host"), None)
    for prefix, label, style in (("origin-", "origin only", "o-"), ("swarm-", "swarm", "s-")):
        points = sorted((r.n, r.seconds) for r in runs if r.name.startswith(prefix))
        if single and prefix == "origin-":
            points = sorted({(1, single), *points})
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    ns = sorted({r.n for r in runs if r.name.startswith(("origin-", "swarm-"))} | {1})
    if single:
        ax.plot(ns, [single * n for n in ns], ":", color="grey", label="N x one host")
        ax.axhline(SWARM_TARGET * single, ls="--", color="green", lw=1, label=f"{SWARM_TARGET} x one host (target)")
    ax.set_xlabel("hosts fetching (N)")
    ax.set_ylabel("seconds until every host has verified data")
    ax.set_title(f"{meta.get('data_mb', '?')} MB to N hosts over {meta.get('rate_mbit', '?')} Mbit/s links")
    ax.set_xticks(ns)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()


def _sources_axes(ax: Any, runs: list, meta: dict) -> None:
    swarms = sorted((r for r in runs if r.name.startswith(("swarm-", "one-host")) and r.from_origin),
                    key=lambda r: r.n)
    x, ticks, labels, edge = 0.0, [], [], []
    for r in swarms:
        xs = [x + i for i in range(len(r.from_origin))]
        origin = [b / 1e6 for b in r.from_origin]
        peers = [b / 1e6 for b in r.from_peers]
        ax.bar(xs, origin, color="tab:orange", label="from the origin" if not edge else None)
        ax.bar(xs, peers, bottom=origin, color="tab:blue", label="from other hosts" if not edge else None)
        copies = r.origin_sent / (meta.get("data_mb", 1) * 1e6)
        ticks.append(sum(xs) / len(xs))
        labels.append(f"{r.name}\norigin sent\n{copies:.2f} copies")
        edge.append(xs[-1] + 0.5)
        x = xs[-1] + 2
    if meta.get("data_mb"):
        ax.axhline(meta["data_mb"], ls="--", color="grey", lw=1, label="the checkpoint")
    for e in edge[:-1]:
        ax.axvline(e + 0.5, color="black", lw=0.5)
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_ylabel("MB of payload each host downloaded")
    ax.set_title("where each host's bytes came from (one bar per host)")
    ax.set_ylim(0, 1.2 * max([meta.get("data_mb") or 0] + [(o + p) / 1e6 for r in swarms
                                                             for o, p in zip(r.from_origin, r.from_peers)]))
    ax.legend(loc="upper center", fontsize=8, ncol=3)


def timeline(run: Any, path: Path, meta: dict) -> None:
    """``timeline.png`` for one scenario (see the module docstring)."""
    links = run.notes.get("links") or {}
    if not links.get("t"):
        return
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12.8, 4.4), dpi=110)
    t = links["t"]
    link = meta.get("rate_mbit", 0)
    for col in range(len(links["hosts"])):
        down = _rates(t, [row[col] for row in links["down"]])
        up = _rates(t, [row[col] for row in links["up"]])
        if col == 0:
            ax.plot(t[1:], up, color="tab:orange", lw=2, label="origin: sent")
            continue
        ax.plot(t[1:], down, color="tab:blue", lw=0.8, alpha=0.6, label="hosts: received" if col == 1 else None)
        ax.plot(t[1:], up, color="tab:green", lw=0.8, alpha=0.6, label="hosts: sent" if col == 1 else None)
    if link:
        ax.axhline(link, ls="--", color="grey", lw=1, label="link rate")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Mbit/s on the link (frames)")
    ax.set_title(f"{run.name}: every link over time")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    for i, (name, line) in enumerate(sorted(run.notes.get("timelines", {}).items())):
        color = plt.cm.tab10(i % 10)
        bx.plot(line["t"], [b / 1e6 for b in line["origin"]], "--", color=color, lw=1)
        bx.plot(line["t"], [b / 1e6 for b in line["peers"]], "-", color=color, lw=1, label=name)
    bx.set_xlabel("seconds")
    bx.set_ylabel("MB downloaded")
    bx.set_title(f"{run.name}: each host's bytes from other hosts (solid) and the origin (dashed)", fontsize=10)
    bx.legend(fontsize=7, ncol=2)
    bx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _rates(t: list[float], counts: list[int]) -> list[float]:
    """Mbit/s between consecutive samples."""
    return [8 * (b - a) / 1e6 / max(t1 - t0, 1e-3) for t0, t1, a, b in zip(t, t[1:], counts, counts[1:])]
