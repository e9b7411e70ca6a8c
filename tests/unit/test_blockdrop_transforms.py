"""BlockDrop's preprocessing: torchvision v2 recipes, picklable for loader workers, streamed statistics."""

import pickle

import numpy as np
import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.workflows.blockdrop.transforms import IMAGENET_STATS, Preprocess, dataset_stats


def sample(h, w, seed=0):
    return {"image": np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "label": 3}


@pytest.mark.parametrize("h,w", [(60, 80), (300, 200), (224, 224)])
def test_imagenet_recipe_gives_224_crops_of_any_size(h, w):
    prep = Preprocess("imagenet", mean=IMAGENET_STATS[0], std=IMAGENET_STATS[1])
    for train in (True, False):
        image, label = prep.transform(train=train, hflip=True)(sample(h, w))
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and label == 3


def test_crop_recipe_pads_crops_and_flips_at_the_native_or_given_size():
    prep = Preprocess("crop", mean=[0.5] * 3, std=[0.25] * 3)
    assert prep.transform(train=True, translate=4, hflip=True)(sample(32, 32))[0].shape == (3, 32, 32)
    small = Preprocess("crop", 16, [0.5] * 3, [0.25] * 3)
    assert small.transform(train=True, translate=2)(sample(32, 32))[0].shape == (3, 16, 16)
    plain, _ = small.transform(train=False)(sample(32, 32))
    again, _ = small.transform(train=False)(sample(32, 32))
    assert torch.equal(plain, again)  # evaluation is deterministic


def test_normalisation_uses_the_given_statistics():
    white = {"image": np.full((8, 8, 3), 255, np.uint8), "label": 0}
    image, _ = Preprocess("crop", mean=[0.5] * 3, std=[0.25] * 3).transform(train=False)(white)
    assert torch.allclose(image, torch.full_like(image, 2.0))


def test_transforms_pickle_for_worker_processes():
    fn = Preprocess("imagenet").transform(train=True, hflip=True)
    assert pickle.loads(pickle.dumps(fn))(sample(100, 120))[0].shape == (3, 224, 224)


def test_dataset_stats_stream_over_batches():
    torch.manual_seed(0)
    batches = [(torch.rand(4, 3, 5, 5) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1), None) for _ in range(6)]
    mean, std = dataset_stats(iter(batches))
    whole = torch.cat([b for b, _ in batches])
    assert np.allclose(mean, whole.mean(dim=(0, 2, 3)).tolist(), atol=1e-6)
    assert np.allclose(std, whole.std(dim=(0, 2, 3), unbiased=False).tolist(), atol=1e-5)
    with pytest.raises(ConfigError, match="no samples"):
        dataset_stats(iter([]))


def test_unknown_recipe_is_refused():
    with pytest.raises(ConfigError, match="augment='mixup'"):
        Preprocess("mixup")
