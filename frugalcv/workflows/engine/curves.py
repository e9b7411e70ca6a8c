"""A training stage's loss and metric curves as one PNG (matplotlib's Agg backend, no display)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

#: at most this many series, the order they first appear in the log
MAX_SERIES = 8


def plot_training_curves(history: Sequence[dict[str, float]], path: str, title: str = "") -> str | None:
    """One panel per logged scalar against the optimizer step; None when nothing was logged."""
    keys = [k for k in dict.fromkeys(k for row in history for k in row) if k not in ("step", "epoch")]
    keys = [k for k in keys if any(isinstance(r.get(k), int | float) and math.isfinite(r[k]) for r in history)]
    if not history or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    keys = keys[:MAX_SERIES]
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys, strict=False):
        points = [(r["step"], r[key]) for r in history if key in r]
        ax.axis("on")
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
