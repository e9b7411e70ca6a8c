"""Markdown tables (layout of Tables 2.1 and 2.3) and PNG figures (Figs. 2.2, 2.3 style).

Figures use matplotlib's Agg backend, so they render without a display.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence

import torch

from frugalcv.workflows.blockdrop.baselines import BASELINES
from frugalcv.workflows.blockdrop.evaluate import PolicyEvaluation

#: the figures every evaluation writes next to its report.md (which links them by relative path)
FIGURES = ("accuracy_vs_flops.png", "block_usage.png", "policies_per_class.png")
_NAMES = {"firstk": "FirstK", "randomk": "RandomK", "distributek": "DistributeK"}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def baselines_table(before: Mapping[str, float], after: Mapping[str, float] | None = None) -> str:
    """Table 2.1: accuracy (%) of the heuristics and the learned policy at the same K,
    before and after joint finetuning."""
    cols = [("Before finetuning", before)] + ([("After finetuning", after)] if after is not None else [])
    head = "| Policy | " + " | ".join(f"K | {name} (%)" for name, _ in cols) + " |"
    rule = "|---|" + "---:|---:|" * len(cols)
    rows = []
    for b in BASELINES:
        cells = [f"{int(m['baseline_k'])} | {_pct(m[f'{b}_accuracy'])}" for _, m in cols]
        rows.append(f"| {_NAMES[b]} | " + " | ".join(cells) + " |")
    cells = [f"{m['blocks_mean']:.1f} ± {m['blocks_std']:.1f} | **{_pct(m['accuracy'])}**" for _, m in cols]
    rows.append("| BlockDrop (learned) | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def results_table(rows: Sequence[tuple[str, Mapping[str, float]]], full_label: str = "Full ResNet") -> str:
    """Table 2.3: accuracy, block usage, FLOPs and speed-up; the first row's full network leads."""
    first = rows[0][1]
    k = int(first.get("num_blocks", 0))
    lines = [
        "| Model | Accuracy (%) | Blocks | FLOPs | Speed-up | Unique policies |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {full_label} | {_pct(first['full_accuracy'])} | {k} | {first['full_flops']:.3g} | 1.00× | 1 |",
    ]
    for label, m in rows:
        lines.append(
            f"| {label} | {_pct(m['accuracy'])} | {m['blocks_mean']:.1f} ± {m['blocks_std']:.1f} | "
            f"{m['flops_mean']:.3g} ± {m['flops_std']:.2g} | {m['flops_speedup']:.2f}× | {int(m['unique_policies'])} |"
        )
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_flops(points: Sequence[tuple[str, Mapping[str, float]]], path: str) -> str:
    """Fig. 2.2: accuracy against mean FLOPs, one point per (label, metrics), e.g. per γ;
    the full ResNet and the heuristics at each point's K are drawn for reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    first = points[0][1]
    ax.scatter([first["full_flops"]], [100 * first["full_accuracy"]], marker="*", s=160, c="k", label="full ResNet")
    for i, (label, m) in enumerate(points):
        color = f"C{i}"
        ax.errorbar([m["flops_mean"]], [100 * m["accuracy"]], xerr=[m["flops_std"]], fmt="o", c=color,
                    capsize=3, label=f"BlockDrop {label}")
        for marker, b in zip("s^v", BASELINES, strict=True):
            if f"{b}_flops" in m:
                ax.scatter([m[f"{b}_flops"]], [100 * m[f"{b}_accuracy"]], marker=marker, c=color, alpha=0.5,
                           label=f"{_NAMES[b]} (K={int(m['baseline_k'])})" if i == 0 else None)
    ax.set_xlabel("FLOPs per image")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy vs. FLOPs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_block_usage(evaluations: Mapping[str, PolicyEvaluation], path: str) -> str:
    """Histogram of the number of blocks each test image runs, one series per evaluation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    k = next(iter(evaluations.values())).policies.shape[1]
    bins = [x - 0.5 for x in range(k + 2)]
    for label, ev in evaluations.items():
        ax.hist(ev.policies.sum(1).numpy(), bins=bins, alpha=0.6, label=label)
    ax.set_xlabel(f"blocks used (of {k})")
    ax.set_ylabel("test images")
    ax.set_title("Block usage")
    ax.legend(fontsize=8)
    return _save(fig, path)


def top_policies_per_class(ev: PolicyEvaluation, top: int = 5) -> dict[int, list[tuple[tuple[int, ...], int]]]:
    """class -> [(policy as 0/1 tuple, count)], most frequent first."""
    out = {}
    for c in sorted(set(ev.labels.tolist())):
        rows = ev.policies[ev.labels == c].int().tolist()
        out[c] = Counter(tuple(r) for r in rows).most_common(top)
    return out


def plot_policies_per_class(ev: PolicyEvaluation, path: str, class_names: Sequence[str] | None = None,
                            top: int = 5) -> str:
    """Fig. 2.3 style: per class, its most frequent policies as a block x policy grid
    (dark = block kept), each column titled with its share of the class."""
    plt = _pyplot()
    per_class = top_policies_per_class(ev, top)
    classes = list(per_class)
    ncols = min(5, len(classes))
    nrows = -(-len(classes) // ncols)
    k = ev.policies.shape[1]
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 0.16 * k * nrows + 0.8 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, classes, strict=False):
        policies = per_class[c]
        grid = torch.tensor([p for p, _ in policies], dtype=torch.float32).t()  # [K, top]
        total = int((ev.labels == c).sum())
        ax.axis("on")
        ax.imshow(grid.numpy(), cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(policies)), [f"{100 * n / total:.0f}%" for _, n in policies], fontsize=6)
        ax.set_yticks([0, k - 1], ["1", str(k)], fontsize=6)
        ax.set_title(class_names[c] if class_names else f"class {c}", fontsize=8)
    fig.suptitle("Most frequent policies per class (rows: blocks, dark = kept)", fontsize=9)
    return _save(fig, path)


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_report(out_dir: str, *, title: str, before: PolicyEvaluation, after: PolicyEvaluation,
                 gamma: float, notes: Sequence[str] = (), class_names: Sequence[str] | None = None,
                 gamma_points: Sequence[tuple[str, Mapping[str, float]]] | None = None) -> str:
    """Write ``report.md`` and the figures into ``out_dir``; returns the markdown text."""
    os.makedirs(out_dir, exist_ok=True)
    figures = {
        "accuracy_vs_flops.png": plot_accuracy_vs_flops(
            gamma_points or [(f"γ={gamma:g}", after.metrics)], os.path.join(out_dir, "accuracy_vs_flops.png")),
        "block_usage.png": plot_block_usage({"before finetuning": before, "after finetuning": after},
                                            os.path.join(out_dir, "block_usage.png")),
        "policies_per_class.png": plot_policies_per_class(after, os.path.join(out_dir, "policies_per_class.png"),
                                                          class_names),
    }
    text = "\n\n".join([
        f"# {title}",
        f"## Results (Table 2.3 layout), γ = {gamma:g}",
        results_table([("BlockDrop, before finetuning", before.metrics),
                       (f"BlockDrop, after finetuning (γ={gamma:g})", after.metrics)],
                      full_label="Full ResNet (pretrained)"),
        "FLOPs: conv + linear, 2 per multiply-accumulate, one image, greedy policy, policy network included "
        f"({before.metrics['policy_flops']:.3g}).",
        "## Heuristic baselines at the same K (Table 2.1 layout)",
        baselines_table(before.metrics, after.metrics),
        "K = the learned policy's mean block count rounded up; the same (finetuned or not) ResNet runs every row.",
        *([ "## Notes", "\n".join(f"- {n}" for n in notes)] if notes else []),
        "## Figures",
        "\n".join(f"![{name}]({name})" for name in figures),
    ])
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(text + "\n")
    return text
