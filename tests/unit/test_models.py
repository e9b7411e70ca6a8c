"""Registry, architectures and one training step for every model's debug flavour."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.models import (
    BlockDropResNet,
    PolicyNet,
    UnknownModelError,
    build_model,
    list_models,
)
from frugalcv.models.blocks import Bottleneck, ZeroPadShortcut


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


NAMES = [
    "cifar_resnet32",
    "cifar_resnet110",
    "imagenet_resnet101",
    "policy_resnet8_cifar",
    "policy_resnet10_imagenet",
]
# small inputs: CIFAR nets accept any size (global pooling), ImageNet debug nets 64x64
SMALL_INPUT = {
    "cifar_resnet32": (3, 16, 16),
    "cifar_resnet110": (3, 16, 16),
    "imagenet_resnet101": (3, 64, 64),
    "policy_resnet8_cifar": (3, 16, 16),
    "policy_resnet10_imagenet": (3, 64, 64),
}


# registered elsewhere, tested in their own files
OTHER_NAMES = [
    "adaframe_lstm", "avgpool_classifier", "dcan_generator", "fcn8s_resnet101", "fcn8s_vgg16", "liteeval_lstm",
    "lstm_classifier", "pspnet_resnet50", "scn_cnn_m", "scn_vgg19",
]


def test_list_models_has_descriptions():
    models = list_models()
    assert list(models) == sorted(NAMES + OTHER_NAMES)
    assert all(desc and "\n" not in desc for desc in models.values())


def test_unknown_model_lists_known_ones():
    with pytest.raises(UnknownModelError) as err:
        build_model("resnet_9000")
    assert isinstance(err.value, ConfigError)
    for name in NAMES:
        assert name in str(err.value)


def test_unknown_argument_lists_allowed_ones():
    with pytest.raises(UnknownModelError, match="num_clases.*allowed: num_classes, debug"):
        build_model("cifar_resnet32", num_clases=100)


@pytest.mark.parametrize(
    ("name", "blocks", "layers"),
    [
        ("cifar_resnet32", 15, (5, 5, 5)),
        ("cifar_resnet110", 54, (18, 18, 18)),
        ("imagenet_resnet101", 33, (3, 4, 23, 3)),
    ],
)
def test_full_size_architectures(name, blocks, layers):
    with torch.device("meta"):  # structure only: skip the weight initialisation
        model = build_model(name, num_classes=7)
    assert isinstance(model, BlockDropResNet)
    assert model.num_blocks == len(model.blocks) == blocks
    assert model.layer_config == layers
    assert model.fc.out_features == 7
    with torch.device("meta"):
        assert build_model(model.policy_name, num_blocks=blocks).num_blocks == blocks


def test_cifar_shortcuts_are_parameter_free_and_widths_16_32_64():
    model = build_model("cifar_resnet110")
    downsampling = [b for b in model.blocks if b.downsample is not None]
    assert len(downsampling) == 2
    assert all(isinstance(b.downsample, ZeroPadShortcut) for b in downsampling)
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels] == [16, 32]
    assert model.layer3[0].conv1.out_channels == model.fc.in_features == 64
    assert model.conv1.kernel_size == (3, 3) and model.conv1.out_channels == 16
    shortcut = ZeroPadShortcut(2, 4, 2)
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    y = shortcut(x)
    assert y.shape == (1, 4, 2, 2)
    assert torch.equal(y[:, :2], nn.functional.avg_pool2d(x, 2))
    assert not y[:, 2:].any()


def test_policy_nets_output_probabilities_for_k_blocks():
    torch.manual_seed(0)
    cifar = build_model("policy_resnet8_cifar", num_blocks=15)
    assert isinstance(cifar, PolicyNet) and cifar.layer_config == (1, 1, 1)
    probs = cifar(torch.randn(2, 3, 32, 32))
    assert probs.shape == (2, 15) and bool(((probs > 0) & (probs < 1)).all())
    imagenet = build_model("policy_resnet10_imagenet", debug=True, num_blocks=4).eval()
    assert imagenet.layer_config == (1, 1, 1, 1)
    x = torch.randn(1, 3, 64, 64)
    # the ImageNet policy sees the image average-pooled to its working size
    assert torch.equal(imagenet(x), imagenet(nn.functional.avg_pool2d(x, 2)))


def test_imagenet_resnet101_loads_torchvision_weights():
    reference = torchvision.models.resnet101().eval()
    model = build_model("imagenet_resnet101").eval()
    model.load_state_dict(reference.state_dict())
    assert all(isinstance(b, Bottleneck) for b in model.blocks)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_policy_resnet10_initialises_from_resnet18():
    policy = build_model("policy_resnet10_imagenet")
    result = policy.load_state_dict(torchvision.models.resnet18().state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["logit.bias", "logit.weight"]


@pytest.mark.parametrize("name", NAMES)
def test_debug_flavour_trains_one_step(name):
    torch.manual_seed(0)
    model = build_model(name, debug=True).train()
    x = torch.randn(2, *SMALL_INPUT[name])
    out = model(x)
    if isinstance(model, PolicyNet):
        loss = out.sum()
    else:
        loss = nn.functional.cross_entropy(out, torch.tensor([0, 1]))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))


def test_debug_flavours_are_small():
    for name in NAMES:
        model = build_model(name, debug=True)
        assert sum(p.numel() for p in model.parameters()) < 200_000, name
