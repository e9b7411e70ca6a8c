"""SCN's report: a Markdown summary and PNG figures (matplotlib, Agg): test regression error per
epoch with and without offsets (Fig. 5.4 style) and the reconstructions per epoch (Fig. 5.3 style)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    plt = _pyplot()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_mse_curves(curves: Mapping[str, Sequence[dict]], path: str) -> str | None:
    """Test MSE against the epoch, one line per run (``{label: [{"epoch", "test_mse"}, ...]}``)."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for label, rows in curves.items():
        ax.plot([r["epoch"] for r in rows], [r["test_mse"] for r in rows], marker="." if len(rows) < 40 else None,
                label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test MSE (sum over dims, mean over pairs)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_reconstructions(recon: Mapping, names: Sequence[str], path: str, columns: int = 8) -> str | None:
    """Rows: the partner classes; columns: the true X_i, then the prediction at spread-out epochs."""
    frames = np.asarray(recon["frames"])  # [E, K, 3, s, s]
    if frames.size == 0:
        return None
    epochs = list(recon["epochs"])
    picks = sorted(set(np.linspace(0, len(epochs) - 1, min(columns, len(epochs))).round().astype(int).tolist()))
    truth = np.asarray(recon["truth"])
    kinds = list(recon["kinds"])
    plt = _pyplot()
    fig, axes = plt.subplots(len(kinds), len(picks) + 1, figsize=(1.2 * (len(picks) + 1), 1.3 * len(kinds)),
                             squeeze=False)
    for r, kind in enumerate(kinds):
        cells = [("X_i", truth[r])] + [(f"ep {epochs[e]}", frames[e, r]) for e in picks]
        for c, (title, image) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
        axes[r, 0].set_ylabel(names[kind] if kind < len(names) else str(kind), fontsize=8)
    return _save(fig, path)


def summary_table(rows: Sequence[tuple[str, Mapping[str, float]]], probe: str = "top-1") -> str:
    lines = [f"| Model | Test MSE | Linear probe {probe} (%) |", "|---|---:|---:|"]
    for label, m in rows:
        mse = f"{m['test_mse']:.4g}" if "test_mse" in m else "-"
        probe = f"{100 * m['probe']:.1f}" if "probe" in m else "-"
        lines.append(f"| {label} | {mse} | {probe} |")
    return "\n".join(lines)


def write_report(folder: str, *, title: str, tables: Sequence[tuple[str, str]], notes: Sequence[str],
                 figures: Sequence[str]) -> str:
    parts = [f"# {title}", ""]
    for heading, table in tables:
        parts += [f"## {heading}", "", table, ""]
    parts += [f"- {n}" for n in notes]
    parts += [""] + [f"![{os.path.splitext(os.path.basename(f))[0]}]({os.path.basename(f)})" for f in figures]
    path = os.path.join(folder, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")
    return path
