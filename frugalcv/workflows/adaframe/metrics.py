"""Video-level scores: mean average precision over classes (FCVID's and ActivityNet's measure) and top-1."""

from __future__ import annotations

import numpy as np


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the average precision of ranking all videos by that class's score.

    ``scores`` [N, C], ``labels`` [N]; a class without a positive video has no AP and is left out
    (NaN when no class has one)."""
    from sklearn.metrics import average_precision_score

    aps = []
    for c in range(scores.shape[1]):
        positives = labels == c
        if positives.any():
            aps.append(average_precision_score(positives, scores[:, c]))
    return float(np.mean(aps)) if aps else float("nan")


def top1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of videos whose highest score is their class."""
    return float((scores.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")
