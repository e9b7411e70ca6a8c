"""Padded feature-sequence batches: truncation, zero padding after the length, coarse features, marks dropped."""

import numpy as np
import pytest
import torch

from frugalcv.workflows.video.data import PadFrames


def sample(frames=5, dim=3):
    return {"key": "v", "features": np.arange(frames * dim, dtype=np.float32).reshape(frames, dim),
            "coarse": np.ones((frames, 2), dtype=np.float32), "label": 4, "informative": np.ones(frames, np.uint8)}


def test_short_videos_are_zero_padded_and_long_ones_truncated():
    out = PadFrames(8, coarse=True)(sample())
    assert out["length"] == 5 and out["label"] == 4 and "informative" not in out
    assert out["features"].shape == (8, 3) and torch.equal(out["features"][5:], torch.zeros(3, 3))
    assert torch.equal(out["features"][:5], torch.from_numpy(sample()["features"]))
    assert out["coarse"].shape == (8, 2) and out["coarse"][5:].abs().sum() == 0
    cut = PadFrames(3, coarse=False)(sample())
    assert cut["length"] == 3 and cut["features"].shape == (3, 3) and "coarse" not in cut


def test_coarse_features_asked_of_a_split_without_them_say_how_to_get_them():
    s = sample()
    del s["coarse"]
    with pytest.raises(KeyError, match="video.extract"):
        PadFrames(8, coarse=True)(s)
