"""LiteEval's report: Markdown tables in the layout of Ch. 4 and PNG figures (matplotlib, Agg).

* ``results_table``: mAP, top-1, fine reads and GFLOPs per video of LiteEval (at each γ given),
  the always-fine network and UNIFORM-K / SEQ-K at LiteEval's budget (Table 4.1's columns);
* ``budgets_table``: UNIFORM-K and SEQ-K at every budget K;
* ``online_table``: top-1 of the prediction forced after the K-th fine read, LiteEval vs SEQ-K;
* figures: mAP vs GFLOPs (Fig. 4.2 style), online accuracy vs K, where the gate reads fine frames.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

#: the figures an evaluation writes next to its report.md (which links them by relative path)
FIGURES = ("map_vs_gflops.png", "online_accuracy.png", "fine_reads.png")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def results_table(rows: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    """One row per (method, its ``summarise`` metrics)."""
    lines = ["| Method | mAP (%) | Top-1 (%) | Fine reads / video | Fine fraction (%) | GFLOPs / video |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, m in rows:
        lines.append(f"| {label} | {_pct(m['map'])} | {_pct(m['top1'])} | {m['fine_reads']:.2f} | "
                     f"{_pct(m['fine_fraction'])} | {m['gflops']:.4g} |")
    return "\n".join(lines)


def budgets_table(uniform: Mapping[int, Mapping[str, float]], seq: Mapping[int, Mapping[str, float]]) -> str:
    """K | UNIFORM-K mAP, GFLOPs | SEQ-K mAP, GFLOPs (offline: the prediction at the video's end)."""
    lines = ["| K | UNIFORM-K mAP (%) | UNIFORM-K GFLOPs | SEQ-K mAP (%) | SEQ-K GFLOPs |",
             "|---:|---:|---:|---:|---:|"]
    for k in sorted(uniform):
        u, s = uniform[k], seq[k]
        lines.append(f"| {k} | {_pct(u['map'])} | {u['gflops']:.4g} | {_pct(s['map'])} | {s['gflops']:.4g} |")
    return "\n".join(lines)


def online_table(liteeval: Mapping[int, float], seq: Mapping[int, float]) -> str:
    """K | LiteEval online top-1 | SEQ-K top-1 | difference (points)."""
    lines = ["| K (fine reads) | LiteEval, online (%) | SEQ-K (%) | Δ (points) |", "|---:|---:|---:|---:|"]
    for k in sorted(liteeval):
        lines.append(f"| {k} | {_pct(liteeval[k])} | {_pct(seq[k])} | {100 * (liteeval[k] - seq[k]):+.1f} |")
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_map_vs_gflops(points: Sequence[tuple[str, Mapping[str, float]]], always_fine: Mapping[str, float],
                       uniform: Mapping[int, Mapping[str, float]], seq: Mapping[int, Mapping[str, float]],
                       path: str) -> str:
    """Fig. 4.2 style: mAP against GFLOPs per video; LiteEval's points (one per γ), the always-fine
    network, and the UNIFORM-K / SEQ-K curves over K."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.8, 4.2))
    for name, curve, marker in (("UNIFORM-K", uniform, "s"), ("SEQ-K", seq, "^")):
        ks = sorted(curve)
        ax.plot([curve[k]["gflops"] for k in ks], [100 * curve[k]["map"] for k in ks], marker=marker, ms=4,
                lw=1, alpha=0.8, label=name)
    ax.scatter([always_fine["gflops"]], [100 * always_fine["map"]], marker="*", s=180, c="k", zorder=3,
               label="always fine")
    ordered = sorted(points, key=lambda p: p[1]["gflops"])
    ax.plot([m["gflops"] for _, m in ordered], [100 * m["map"] for _, m in ordered], "o-", c="C3", lw=1.5,
            ms=7, zorder=4, label="LiteEval")
    for i, (label, m) in enumerate(ordered):  # labels alternately below and above: close points stay legible
        ax.annotate(label, (m["gflops"], 100 * m["map"]), textcoords="offset points",
                    xytext=(4, -12 if i % 2 == 0 else 6), fontsize=7)
    ax.set_xlabel("GFLOPs per video")
    ax.set_ylabel("mAP (%)")
    ax.set_title("mAP vs. computation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_online(liteeval: Mapping[int, float], seq: Mapping[int, float], path: str) -> str:
    """Top-1 of the prediction forced after the K-th fine read, against K: LiteEval vs SEQ-K."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ks = sorted(liteeval)
    ax.plot(ks, [100 * liteeval[k] for k in ks], "o-", c="C3", label="LiteEval (online)")
    ax.plot(ks, [100 * seq[k] for k in ks], "^-", c="C1", label="SEQ-K")
    ax.set_xlabel("fine frames read before predicting (K)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Online recognition")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_fine_reads(positions: Mapping[str, np.ndarray], path: str) -> str:
    """Per frame position: how often LiteEval read the fine frame, and (where the split marks them)
    how often that frame shows the class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    rate = positions["read_rate"]
    t = np.arange(1, len(rate) + 1)
    ax.bar(t, 100 * rate, color="C3", alpha=0.7, label="fine frame read")
    if "informative_rate" in positions:
        ax.plot(t, 100 * positions["informative_rate"], "k.-", label="frame shows the class")
    ax.set_xlabel("frame")
    ax.set_ylabel("videos (%)")
    ax.set_title("Where LiteEval reads fine features")
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_report(out_dir: str, *, title: str, tables: Sequence[tuple[str, str]], notes: Sequence[str],
                 figures: Sequence[str]) -> str:
    """``report.md`` in ``out_dir``: the title, each (heading, table), notes, the figures by relative path."""
    parts = [f"# {title}"]
    for heading, table in tables:
        parts += [f"## {heading}", table]
    if notes:
        parts += ["## Notes", "\n".join(f"- {n}" for n in notes)]
    parts += ["## Figures", "\n".join(f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figures)]
    text = "\n\n".join(parts) + "\n"
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    return text
