"""BlockDrop's preprocessing: per-sample geometry in the workers, per-batch augmentation on the device."""

import pickle

import numpy as np
import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.workflows.blockdrop.transforms import (
    IMAGENET_STATS,
    BatchTransform,
    Preprocess,
    dataset_stats,
    translate_images,
)


def sample(h, w, seed=0):
    return {"image": np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "label": 3}


def batch_of(transform, samples):
    pairs = [transform(s) for s in samples]
    return torch.stack([x for x, _ in pairs]), torch.tensor([y for _, y in pairs])


@pytest.mark.parametrize("h,w", [(60, 80), (300, 200), (224, 224)])
def test_imagenet_recipe_gives_224_crops_of_any_size(h, w):
    prep = Preprocess("imagenet", mean=IMAGENET_STATS[0], std=IMAGENET_STATS[1])
    for train in (True, False):
        per_sample, per_batch = prep.transforms(train=train, hflip=True)
        image, label = per_sample(sample(h, w))
        assert image.shape == (3, 224, 224) and image.dtype == torch.uint8 and label == 3
        x, y = per_batch(batch_of(per_sample, [sample(h, w, s) for s in range(3)]), torch.Generator().manual_seed(0))
        assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32 and y.tolist() == [3, 3, 3]


def test_crop_recipe_keeps_the_native_size_or_resizes_to_the_given_one():
    per_sample, per_batch = Preprocess("crop", mean=[0.5] * 3, std=[0.25] * 3).transforms(train=True, translate=4,
                                                                                         hflip=True)
    assert per_sample(sample(32, 32))[0].shape == (3, 32, 32)
    assert per_batch(batch_of(per_sample, [sample(32, 32)]), torch.Generator())[0].shape == (1, 3, 32, 32)
    small, _ = Preprocess("crop", 16, [0.5] * 3, [0.25] * 3).transforms(train=False)
    assert small(sample(32, 32))[0].shape == (3, 16, 16)
    assert torch.equal(small(sample(32, 32))[0], small(sample(32, 32))[0])  # evaluation is deterministic


def test_evaluation_batches_are_only_scaled_and_normalised():
    _, per_batch = Preprocess("crop", mean=[0.5] * 3, std=[0.25] * 3).transforms(train=False, translate=4, hflip=True)
    assert per_batch.translate == 0 and not per_batch.hflip
    white = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    x, _ = per_batch((white, torch.zeros(2)), torch.Generator())
    assert torch.allclose(x, torch.full_like(x, 2.0))


def test_translation_zero_pads_and_crops_back_each_image_at_its_own_offset():
    images = torch.arange(1, 2 * 3 * 4 * 5 + 1, dtype=torch.int64).view(2, 3, 4, 5).to(torch.uint8)
    same = translate_images(images, torch.tensor([2, 2]), torch.tensor([2, 2]), pad=2)
    assert torch.equal(same, images)  # offset == pad is the identity
    moved = translate_images(images, torch.tensor([0, 3]), torch.tensor([1, 4]), pad=2)
    # image 0: content moved 2 down and 1 right; the rows/columns it left are zeros
    assert torch.equal(moved[0, :, 2:, 1:], images[0, :, :2, :4]) and moved[0, :, :2].eq(0).all()
    # image 1: 1 up and 2 left
    assert torch.equal(moved[1, :, :3, :3], images[1, :, 1:, 2:]) and moved[1, :, 3:].eq(0).all()


def test_augmentation_is_drawn_per_image_and_only_from_the_generator():
    transform = BatchTransform(translate=4, hflip=True)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    a, _ = transform((images, None), torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG plays no part
    b, _ = transform((images, None), torch.Generator().manual_seed(7))
    c, _ = transform((images, None), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    same_image = images[:1].expand(64, -1, -1, -1)
    d, _ = transform((same_image, None), torch.Generator().manual_seed(7))
    assert len({tuple(x.flatten().tolist()) for x in d}) > 10  # one image, many draws: per image, not per batch


def test_flip_mirrors_about_half_the_images():
    images = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).expand(200, 3, 2, 4).contiguous()
    x, _ = BatchTransform(hflip=True)((images, None), torch.Generator().manual_seed(0))
    flipped = x[:, 0, 0, 0] > x[:, 0, 0, -1]
    assert torch.equal(x[flipped], (images.flip(-1).float() / 255)[flipped])
    assert 70 < int(flipped.sum()) < 130


def test_sample_transforms_pickle_for_worker_processes():
    fn, _ = Preprocess("imagenet").transforms(train=True, hflip=True)
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


def test_statistics_transforms_leave_images_unnormalised():
    prep = Preprocess("crop", mean=[0.5] * 3, std=[0.25] * 3)
    per_sample, per_batch = prep.stats_transforms()
    x, _ = per_batch(batch_of(per_sample, [sample(8, 8)]), torch.Generator())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_unknown_recipe_is_refused():
    with pytest.raises(ConfigError, match="augment='mixup'"):
        Preprocess("mixup")
