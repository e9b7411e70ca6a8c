"""Markdown tables (layout of Table 6.1) and PNG figures (translations; Fig. 6.3 style predictions).

Figures use matplotlib's Agg backend, so they render without a display. Each image cell keeps the
aspect of its row's first image, so the PNG's shape follows the inputs' shape.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from frugalcv.workflows.dcan.metrics import iou_key
from frugalcv.workflows.dcan.palette import colorize

#: column headers of Table 6.1 for the Cityscapes classes whose full name is long
SHORT_NAMES = {"traffic light": "light", "traffic sign": "sign", "vegetation": "veg",
               "motorcycle": "mbike", "bicycle": "bike"}
_CELL_IN = 3.0  # width of one image cell, inches
_TITLE_IN = 0.35  # height of the column-title strip, inches
_PAD_IN = 0.03  # white margin around each image, inches
_DPI = 100


def _pct(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.1f}"


def iou_table(rows: Sequence[tuple[str, Mapping[str, float]]], class_names: Sequence[str],
              classes: Sequence[int]) -> str:
    """Table 6.1: per-class IoU (%) and mIoU, one row per method; a missing value prints "–"."""
    names = [class_names[c] for c in classes]
    head = "| Method | " + " | ".join(SHORT_NAMES.get(n, n) for n in names) + " | mIoU |"
    rule = "|---|" + "---:|" * (len(names) + 1)
    lines = [head, rule]
    for label, m in rows:
        cells = [_pct(m.get(iou_key(n))) for n in names] + [_pct(m.get("miou"))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(rows: Sequence[tuple[str, Mapping[str, float]]]) -> str:
    """mIoU and pixel accuracy (%) per method, and each method's mIoU gain (points) over the first row."""
    lines = ["| Method | mIoU (%) | Pixel acc. (%) | Gain vs. first row (mIoU points) |", "|---|---:|---:|---:|"]
    base = rows[0][1].get("miou") if rows else None
    for i, (label, m) in enumerate(rows):
        miou = m.get("miou")
        known = i > 0 and base is not None and miou is not None and not math.isnan(base - miou)
        gain = f"{100 * (miou - base):+.1f}" if known else "–"
        lines.append(f"| {label} | {_pct(miou)} | {_pct(m.get('pixel_accuracy'))} | {gain} |")
    return "\n".join(lines)


def _rgb(image, what: str) -> np.ndarray:
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{what} is {a.dtype} of shape {a.shape}; expected an HxWx3 uint8 image "
                         "(permute CHW tensors to HWC and scale floats to 0..255)")
    return a


def _check_lengths(**lists: Sequence) -> int:
    sizes = {name: len(v) for name, v in lists.items()}
    if len(set(sizes.values())) != 1 or 0 in sizes.values():
        raise ValueError(f"need the same, non-zero number of images in each column, got {sizes}")
    return next(iter(sizes.values()))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _image_grid(rows: list[list[np.ndarray]], titles: Sequence[str], path: str, first_mask_col: int | None = None
                ) -> str:
    """Rows of images under one title per column; cell height = width x (H/W of the row's first image).

    Columns from ``first_mask_col`` on are coloured masks, drawn without smoothing so every colour is a class.
    """
    plt = _pyplot()
    ncols = len(titles)
    heights = [_CELL_IN * r[0].shape[0] / r[0].shape[1] for r in rows]
    fig_w, fig_h = ncols * _CELL_IN, _TITLE_IN + sum(heights)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=_DPI)
    for j, title in enumerate(titles):
        fig.text((j + 0.5) / ncols, 1 - 0.5 * _TITLE_IN / fig_h, title, ha="center", va="center", fontsize=10)
    top = fig_h - _TITLE_IN
    for row, h in zip(rows, heights, strict=True):
        top -= h
        for j, image in enumerate(row):
            ax = fig.add_axes(((j * _CELL_IN + _PAD_IN) / fig_w, (top + _PAD_IN) / fig_h,
                               (_CELL_IN - 2 * _PAD_IN) / fig_w, (h - 2 * _PAD_IN) / fig_h))
            mask = first_mask_col is not None and j >= first_mask_col
            ax.imshow(image, interpolation="nearest" if mask else "antialiased")
            ax.axis("off")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def plot_translations(sources: Sequence, synthesized: Sequence, targets: Sequence, path: str) -> str:
    """Rows of (source image, the source synthesised in the target's style, a target image); PNG at path."""
    n = _check_lengths(sources=sources, synthesized=synthesized, targets=targets)
    rows = [[_rgb(sources[i], f"sources[{i}]"), _rgb(synthesized[i], f"synthesized[{i}]"),
             _rgb(targets[i], f"targets[{i}]")] for i in range(n)]
    return _image_grid(rows, ("source", "synthesised source", "target"), path)


def plot_predictions(images: Sequence, ground_truth: Sequence, predictions: Mapping[str, Sequence],
                     path: str) -> str:
    """Fig. 6.3 style: columns image | ground truth | one per method, masks in the Cityscapes palette."""
    n = _check_lengths(images=images, ground_truth=ground_truth,
                       **{f"predictions[{k!r}]": v for k, v in predictions.items()})
    rows = [[_rgb(images[i], f"images[{i}]"), colorize(ground_truth[i]),
             *(colorize(p[i]) for p in predictions.values())] for i in range(n)]
    return _image_grid(rows, ("image", "ground truth", *predictions), path, first_mask_col=1)


def _link(figure: str, folder: str) -> str:
    if os.path.exists(figure):
        return os.path.relpath(os.path.abspath(figure), os.path.abspath(folder)).replace(os.sep, "/")
    if os.path.exists(os.path.join(folder, figure)):
        return figure.replace(os.sep, "/")
    raise FileNotFoundError(f"figure {figure!r} exists neither as given nor inside {folder!r}; "
                            "write it (plot_*) before the report that links it")


def write_report(folder: str, *, title: str, tables: Sequence[tuple[str, str]], figures: Sequence[str]) -> str:
    """Write ``folder/report.md``: the title, one section per (heading, table), then the figures,
    linked by path relative to the folder; returns the report's path."""
    os.makedirs(folder, exist_ok=True)
    parts = [f"# {title}"]
    for heading, table in tables:
        parts += [f"## {heading}", table]
    if figures:
        parts += ["## Figures", "\n\n".join(f"![{os.path.basename(f)}]({_link(f, folder)})" for f in figures)]
    path = os.path.join(folder, "report.md")
    with open(path, "w") as f:
        f.write("\n\n".join(parts) + "\n")
    return path
