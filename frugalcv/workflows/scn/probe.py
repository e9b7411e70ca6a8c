"""The linear probe: a linear classifier (scikit-learn) on frozen features of labelled patches,
trained on one split's patches and scored on another's (the dissertation's linear SVM on h1).

Every labelled patch of a pair counts: X_i with its ``a.cls`` and X_j with its ``b.cls``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from frugalcv.errors import ConfigError

Features = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def labelled_features(batches: Iterable, extractors: dict[str, Features]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({name: [N, D] features of every labelled patch}, [N] labels), patches in stream order."""
    rows: dict[str, list[np.ndarray]] = {name: [] for name in extractors}
    labels: list[np.ndarray] = []
    for x_i, x_j, _, a_label, b_label, _ in batches:
        for patches, label in ((x_i, a_label), (x_j, b_label)):
            keep = label >= 0
            if not bool(keep.any()):
                continue
            for name, extract in extractors.items():
                rows[name].append(extract(patches[keep]).float().cpu().numpy())
            labels.append(label[keep].cpu().numpy())
    if not labels:
        raise ConfigError("the probe's split has no labelled patches (a.cls / b.cls); give one with classes")
    return {name: np.concatenate(r) for name, r in rows.items()}, np.concatenate(labels)


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                   kind: str = "linear_svm", c: float = 1.0, seed: int = 0) -> float:
    """Top-1 on ``test`` of a linear classifier fitted on standardised ``train`` features."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "linear_svm":
        from sklearn.svm import LinearSVC

        classifier = LinearSVC(C=c, max_iter=20_000, random_state=seed)
    else:
        from sklearn.linear_model import LogisticRegression

        classifier = LogisticRegression(C=c, max_iter=5_000, random_state=seed)
    if len(np.unique(train_y)) < 2:
        raise ConfigError(f"the probe's training patches hold one class ({int(train_y[0])}); it needs two or more")
    model = make_pipeline(StandardScaler(), classifier).fit(train_x, train_y)
    return float((model.predict(test_x) == test_y).mean())
