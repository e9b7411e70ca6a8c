"""The SCN linear probe on image-level multi-hot labels (VOC classification's mean AP)."""

import numpy as np
import pytest

from frugalcv.errors import ConfigError
from frugalcv.workflows.scn.probe import probe_map


def multi_hot(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Features whose first 3 dims carry 3 independent labels, plus noise dims."""
    y = (rng.random((n, 3)) < 0.4).astype(np.uint8)
    x = np.concatenate([y * 2.0 - 1.0 + 0.1 * rng.standard_normal((n, 3)), rng.standard_normal((n, 5))], axis=1)
    return x, y


def test_separable_labels_give_a_mean_ap_of_one_and_noise_far_less():
    rng = np.random.default_rng(0)
    train_x, train_y = multi_hot(120, rng)
    test_x, test_y = multi_hot(60, rng)
    assert probe_map(train_x, train_y, test_x, test_y) == pytest.approx(1.0)
    noise = probe_map(train_x[:, 3:], train_y, test_x[:, 3:], test_y)
    assert noise < 0.8


def test_a_class_absent_from_the_test_split_is_not_scored():
    rng = np.random.default_rng(1)
    train_x, train_y = multi_hot(80, rng)
    test_x, test_y = multi_hot(40, rng)
    test_y[:, 2] = 0
    full = probe_map(train_x, train_y, test_x, test_y)
    assert full == pytest.approx(probe_map(train_x, train_y[:, :2], test_x, test_y[:, :2]))


def test_no_positive_at_all_is_a_clear_error():
    x = np.zeros((4, 2))
    with pytest.raises(ConfigError, match="no positive"):
        probe_map(x, np.ones((4, 2), np.uint8), x, np.zeros((4, 2), np.uint8))
