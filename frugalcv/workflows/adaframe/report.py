"""AdaFrame's report: the results table (Table 3.1's layout: method, frames, mAP, GFLOPs), mAP
against GFLOPs and frames (Fig. 3.3 style) and when each class stops (Fig. 3.5 style).

Figures use matplotlib's Agg backend, so they render without a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

#: the figures every evaluation writes next to its report.md
FIGURES = ("map_vs_gflops.png", "stop_steps_per_class.png")
_NAMES = {"avgpool": "AVGPOOLING", "lstm": "LSTM"}


def _pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def _gflops(x: float) -> str:
    return f"{x:.3g}"


def method_label(model: str, mode: str, k: int | None) -> str:
    """``AVGPOOLING``, ``LSTM-U8``, ``LSTM-R8``... as the dissertation names them."""
    return _NAMES[model] if mode == "all" else f"{_NAMES[model]}-{mode.upper()}{k}"


def results_table(rows: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    """Table 3.1: one row per (label, metrics with map, top1, frames_mean, gflops_mean)."""
    lines = ["| Method | Frames | mAP (%) | Top-1 (%) | GFLOPs |", "|---|---:|---:|---:|---:|"]
    for label, m in rows:
        frames = f"{m['frames_mean']:.2f}"
        if "frames_std" in m:
            frames += f" ± {m['frames_std']:.2f}"
        lines.append(f"| {label} | {frames} | {_pct(m['map'])} | {_pct(m['top1'])} | {_gflops(m['gflops_mean'])} |")
    return "\n".join(lines)


def class_stop_table(stops: np.ndarray, labels: np.ndarray, names: Sequence[str], count: int) -> str:
    """The ``count`` classes that stop earliest and latest: mean glimpses and videos."""
    means = per_class_means(stops, labels, len(names))
    order = [c for c in np.argsort(means, kind="stable") if not math.isnan(means[c])]
    chosen = order if len(order) <= 2 * count else order[:count] + order[-count:]
    lines = ["| Class | Glimpses (mean) | Videos |", "|---|---:|---:|"]
    for c in chosen:
        lines.append(f"| {names[c]} | {means[c]:.2f} | {int((labels == c).sum())} |")
    return "\n".join(lines)


def per_class_means(stops: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean glimpses (stop step + 1) per class; NaN for a class without videos."""
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        if (labels == c).any():
            out[c] = float((stops[labels == c] + 1).mean())
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_map_vs_cost(adaframe: Mapping[str, Sequence[Mapping[str, float]]],
                     baselines: Mapping[str, Sequence[Mapping[str, float]]], path: str) -> str:
    """Fig. 3.3: mAP against GFLOPs and against frames per video. ``adaframe``: a line per T_e
    label through its (μ) points; ``baselines``: a line per series (e.g. LSTM-U over K)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, xlabel in ((axes[0], "gflops_mean", "GFLOPs per video"), (axes[1], "frames_mean", "frames per video")):
        xs = []
        for i, (label, points) in enumerate(baselines.items()):
            pts = sorted(points, key=lambda m: m[key])
            xs += [m[key] for m in pts]
            style = "--" if "-R" in label else "-"
            ax.plot([m[key] for m in pts], [100 * m["map"] for m in pts], style, marker="s^v<>"[i % 5],
                    c=f"C{i}", alpha=0.8, label=label)
        for j, (label, points) in enumerate(adaframe.items()):
            pts = sorted(points, key=lambda m: m[key])
            xs += [m[key] for m in pts]
            ax.plot([m[key] for m in pts], [100 * m["map"] for m in pts], "-o", c=f"C{len(baselines) + j}",
                    lw=2, label=label)
        positive = [x for x in xs if x > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mAP (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("mAP vs. computation: AdaFrame (lookahead stop at several μ) and the baselines at K frames",
                 fontsize=9)
    return _save(fig, path)


def plot_stop_steps(stops: np.ndarray, labels: np.ndarray, names: Sequence[str], steps: int, path: str,
                    count: int = 10) -> str:
    """Fig. 3.5 style: per class, the share of its videos that stop after each number of glimpses
    (rows sorted by the mean; the ``count`` earliest and latest classes when there are more)."""
    plt = _pyplot()
    means = per_class_means(stops, labels, len(names))
    order = [c for c in np.argsort(means, kind="stable") if not math.isnan(means[c])]
    chosen = order if len(order) <= 2 * count else order[:count] + order[-count:]
    grid = np.zeros((len(chosen), steps))
    for row, c in enumerate(chosen):
        counts = np.bincount(stops[labels == c], minlength=steps)[:steps]
        grid[row] = counts / max(1, counts.sum())
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * steps + 2), 0.32 * len(chosen) + 1.4))
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.scatter([means[c] - 1 for c in chosen], range(len(chosen)), marker="|", c="C3", s=120)
    ax.set_yticks(range(len(chosen)), [str(names[c]) for c in chosen], fontsize=7)
    ax.set_xticks(range(steps), [str(t + 1) for t in range(steps)], fontsize=7)
    ax.set_xlabel("glimpses before the stop")
    ax.set_title("When each class stops (share of its videos; red: the mean)", fontsize=9)
    if len(chosen) < len(order):
        ax.axhline(count - 0.5, c="k", lw=1)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_report(out_dir: str, *, title: str, table: str, notes: Sequence[str], class_table: str,
                 figures: Sequence[str]) -> str:
    """``report.md`` in ``out_dir`` (figures linked by relative path); returns its text."""
    parts = [f"# {title}", "## Results (Table 3.1 layout)", table, "\n".join(f"- {n}" for n in notes),
             "## Classes that stop earliest and latest", class_table,
             "## Figures", "\n".join(f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figures)]
    text = "\n\n".join(parts) + "\n"
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text)
    return text
