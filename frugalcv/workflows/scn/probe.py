"""The linear probe: a linear classifier (scikit-learn) on frozen features of labelled patches,
trained on one split's patches and scored on another's (the dissertation's linear SVM on h1).

Every labelled patch of a pair counts: X_i with its ``a.cls`` and X_j with its ``b.cls``. With
labelled images instead (``probe_train`` / ``probe_test``), each whole image is one sample: one
label (top-1) or image-level multi-hot labels (VOC classification: one-vs-rest, mean AP).
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

    classifier = _classifier(kind, c, seed)
    if len(np.unique(train_y)) < 2:
        raise ConfigError(f"the probe's training patches hold one class ({int(train_y[0])}); it needs two or more")
    model = make_pipeline(StandardScaler(), classifier).fit(train_x, train_y)
    return float((model.predict(test_x) == test_y).mean())


@torch.no_grad()
def image_features(batches: Iterable, extractors: dict[str, Features]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({name: [N, D] features of every image}, [N] labels or [N, C] multi-hot), images in stream order."""
    rows: dict[str, list[np.ndarray]] = {name: [] for name in extractors}
    labels: list[np.ndarray] = []
    for images, label in batches:
        for name, extract in extractors.items():
            rows[name].append(extract(images).float().cpu().numpy())
        labels.append(label.cpu().numpy())
    if not labels:
        raise ConfigError("the probe's image split is empty")
    return {name: np.concatenate(r) for name, r in rows.items()}, np.concatenate(labels)


def probe_map(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
              kind: str = "linear_svm", c: float = 1.0, seed: int = 0) -> float:
    """Mean over classes of the average precision (scikit-learn's) on ``test`` of one-vs-rest linear
    classifiers fitted on standardised ``train`` features; ``*_y`` are [N, C] multi-hot. A class is
    scored where ``test`` has a positive and fitted where ``train`` has both a positive and a negative."""
    from sklearn.metrics import average_precision_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    fit_x, score_x = scaler.transform(train_x), scaler.transform(test_x)
    aps = []
    for cls in range(train_y.shape[1]):
        positives = test_y[:, cls] > 0
        if not positives.any():
            continue
        target = train_y[:, cls] > 0
        if target.all() or not target.any():
            aps.append(float(positives.mean()))  # nothing to fit: the chance level of a constant score
            continue
        classifier = _classifier(kind, c, seed).fit(fit_x, target)
        aps.append(float(average_precision_score(positives, classifier.decision_function(score_x))))
    if not aps:
        raise ConfigError("the probe's test images have no positive label of any class")
    return float(np.mean(aps))


def _classifier(kind: str, c: float, seed: int):
    if kind == "linear_svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=c, max_iter=20_000, random_state=seed)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5_000, random_state=seed)
