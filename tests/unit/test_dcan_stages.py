"""DCAN's stage pieces: per-sample resize, per-batch crop/flip, target matching, model files, params, the
end-to-end optimiser."""

import copy

import numpy as np
import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.sharding.manifest import Manifest
from frugalcv.workflows import kit
from frugalcv.workflows.dcan import model_file
from frugalcv.workflows.dcan.data import CropFlip, SampleTransform, normalize
from frugalcv.workflows.dcan.optim import SGDAndAdam
from frugalcv.workflows.dcan.params import SourceOnlyParams, TrainParams
from frugalcv.workflows.dcan.tasks import matched_targets, segmentation_loss


def sample(h=20, w=30):
    rng = np.random.default_rng(0)
    return {"key": "k", "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
            "mask": rng.integers(0, 19, (h, w), dtype=np.uint8)}


def test_sample_transform_resizes_image_bilinear_and_mask_nearest():
    image, mask = SampleTransform([10, 15], with_mask=True)(sample())
    assert image.shape == (3, 10, 15) and image.dtype == torch.uint8
    assert mask.shape == (10, 15) and set(mask.unique().tolist()) <= set(range(19))
    only = SampleTransform(None, with_mask=False)(sample())
    assert only.shape == (3, 20, 30)  # the target's mask never leaves the worker


def test_crop_flip_cuts_image_and_mask_alike_and_repeats_with_the_generator():
    images = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12).to(torch.uint8)
    masks = images[:, 0].clone()
    crop = CropFlip([4, 6], hflip=True)
    a = crop((images, masks), torch.Generator().manual_seed(3))
    b = crop((images, masks), torch.Generator().manual_seed(3))
    assert a[0].shape == (2, 3, 4, 6) and a[1].shape == (2, 4, 6) and a[1].dtype == torch.long
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal((a[0][:, 0] * 255).round().long(), a[1])  # the mask is the image's channel 0
    assert a[0].max() <= 1.0
    big = CropFlip([100, 100], hflip=False)(images, torch.Generator())  # clamped to the image
    assert big.shape == (2, 3, 8, 12)


def test_matched_targets_gives_k_per_source_image():
    target = torch.arange(4).float().view(4, 1, 1, 1)
    assert matched_targets(target, 2, 2).flatten().tolist() == [0, 1, 2, 3]
    assert matched_targets(target[:3], 2, 2).flatten().tolist() == [0, 1, 2, 0]  # a tiny split repeats


def test_segmentation_loss_ignores_255():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = 5.0
    masks = torch.tensor([[[1, 1], [255, 255]]])
    assert segmentation_loss(logits, masks) < 0.02
    assert torch.allclose(normalize(torch.ones(1, 3, 1, 1)).flatten(),
                          torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]))


def test_classes_come_from_the_source_manifest():
    names = [f"c{i}" for i in range(19)]
    synthia = Manifest("synthia", "all", "segmentation", {}, names, [],
                       extra={"classes_present": [{"train_id": i, "name": names[i]} for i in (0, 1, 2)]})
    assert model_file.classes_of(synthia, 19) == ([0, 1, 2], names)
    gta5 = Manifest("gta5", "all", "segmentation", {}, names, [])
    assert model_file.classes_of(gta5, 19) == (list(range(19)), names)


def test_a_file_that_is_not_a_dcan_model_is_refused_naming_the_input(tmp_path):
    url = str(tmp_path / "other.pt")
    kit.save_state(url, {"resnet": {}})

    class Ctx:
        stage, inputs = "evaluate", {"checkpoint": url}

        def input(self, name):
            return self.inputs[name]

    with pytest.raises(ConfigError, match=r"stages.evaluate.inputs.checkpoint: .*other.pt is not a DCAN model file"):
        model_file.read(Ctx(), "checkpoint", needs="segmentation")
    kit.save_state(url, {"format": "dcan", "segmentation": {}})
    with pytest.raises(ConfigError, match="holds no generator network"):
        model_file.read(Ctx(), "checkpoint", needs="generator")


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"model": "unet"}, "model"), ({"crop": [512]}, "crop"), ({"targets_per_source": 0}, "targets_per_source"),
    ({"momentum": 1.0}, "momentum"), ({"source_resize": [8, 8]}, "source_resize"),
])
def test_bad_params_name_their_field(kwargs, field):
    with pytest.raises(kit.FieldError) as e:
        SourceOnlyParams(**kwargs)
    assert e.value.field == field
    with pytest.raises(kit.FieldError):
        TrainParams(gen_weight=-1)
    with pytest.raises(kit.FieldError):
        TrainParams(generator_lr=-1e-4)


def _steps(optimizers, params, n=4):
    for i in range(n):
        loss = (params[0] ** 2).sum() * (i + 1) + torch.sin(params[1]).sum()
        loss.backward()
        for o in optimizers:
            o.step()
            o.zero_grad()


def test_sgd_and_adam_groups_step_as_torch_sgd_and_adam_and_resume():
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_(True) for p in ours]

    def build(params):
        return SGDAndAdam([{"params": [params[0]]}, {"params": [params[1]], "rule": "adam", "lr": 1e-3,
                                                      "weight_decay": 0.0}], lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt = build(ours)
    _steps([opt], ours)
    _steps([torch.optim.SGD([ref[0]], lr=0.1, momentum=0.9, weight_decay=5e-4), torch.optim.Adam([ref[1]], lr=1e-3)],
           ref)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a, b)
    resumed = [p.detach().clone().requires_grad_(True) for p in ours]
    again = build(resumed)
    again.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a checkpoint file: no shared buffers
    _steps([opt], ours, 2)
    _steps([again], resumed, 2)
    assert all(torch.equal(a, b) for a, b in zip(ours, resumed, strict=True))
    with pytest.raises(ValueError, match="rule='lbfgs'"):
        SGDAndAdam([{"params": [ours[0]], "rule": "lbfgs"}], lr=0.1)
