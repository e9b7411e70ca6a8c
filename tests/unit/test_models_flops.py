"""FLOPs accounting: conv + linear only, 2 per multiply-accumulate, per image."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from frugalcv.models import block_flops, build_model, count_flops, flops_report, policy_flops
from frugalcv.models.blockdrop.resnet import BlockDropResNet
from frugalcv.models.blocks import BasicBlock, Bottleneck


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_single_conv_matches_hand_count():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 16x16 -> 8x8
    assert count_flops(conv, (3, 16, 16)) == 2 * 3 * 8 * 3 * 3 * 8 * 8
    grouped = nn.Conv2d(8, 6, 3, padding=1, groups=2, bias=False)
    assert count_flops(grouped, (8, 4, 4)) == 2 * (8 // 2) * 6 * 3 * 3 * 4 * 4


def test_linear_matches_hand_count():
    assert count_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5


def _tiny(block, layers, widths, imagenet_stem=False, shortcut="zero_pad", size=(3, 8, 8)):
    return BlockDropResNet(
        block,
        layers,
        widths,
        stem_width=4,
        imagenet_stem=imagenet_stem,
        shortcut=shortcut,
        input_size=size,
        num_classes=3,
        policy_name="policy_resnet8_cifar",
        debug=True,
    )


def test_tiny_cifar_segments_match_hand_count():
    model = _tiny(BasicBlock, [2, 1], [4, 8])  # 8x8 input; second segment at 4x4
    base, per_block = block_flops(model)
    stem = 2 * 3 * 4 * 9 * 8 * 8
    fc = 2 * 8 * 3
    same = 2 * (2 * 4 * 4 * 9 * 8 * 8)  # two 4->4 3x3 convs at 8x8
    down = 2 * 4 * 8 * 9 * 4 * 4 + 2 * 8 * 8 * 9 * 4 * 4  # strided 4->8, then 8->8, at 4x4
    assert base == stem + fc  # the zero-padding shortcut is free
    assert per_block == [same, same, down]
    assert count_flops(model) == base + sum(per_block)


def test_tiny_bottleneck_segment_with_conv_shortcut():
    model = _tiny(Bottleneck, [1, 1], [2, 4], imagenet_stem=True, shortcut="conv", size=(3, 16, 16))
    base, per_block = block_flops(model)
    # stem 7x7/2 -> 8x8, max pool -> 4x4; block 0 at 4x4 (4 -> 2 -> 2 -> 8); block 1 at 2x2
    stem = 2 * 3 * 4 * 49 * 8 * 8
    shortcuts = 2 * 4 * 8 * 4 * 4 + 2 * 8 * 16 * 2 * 2  # 1x1 projections run even when dropped
    fc = 2 * 16 * 3
    block0 = 2 * 4 * 2 * 4 * 4 + 2 * 2 * 2 * 9 * 4 * 4 + 2 * 2 * 8 * 4 * 4
    block1 = 2 * 8 * 4 * 4 * 4 + 2 * 4 * 4 * 9 * 2 * 2 + 2 * 4 * 16 * 2 * 2  # 3x3 is strided
    assert (base, per_block) == (stem + shortcuts + fc, [block0, block1])


def test_policy_flops_is_base_plus_kept_blocks():
    keep = torch.tensor([[1.0, 0, 1], [0, 0, 0], [1, 1, 1]])
    flops = policy_flops(keep, 100, [10, 20, 30], policy_net_flops=5)
    assert flops.dtype == torch.float64
    assert flops.tolist() == [145, 105, 165]


def test_counting_leaves_the_model_as_it_was():
    model = build_model("cifar_resnet32", debug=True).train()
    bn = model.layer1[0].bn1
    before = bn.running_mean.clone()
    block_flops(model)
    assert model.training and torch.equal(bn.running_mean, before)
    assert all(not m._forward_hooks for m in model.modules())


def test_cifar_resnet110_matches_dissertation():
    base, per_block = block_flops(build_model("cifar_resnet110"))
    assert base == 2 * 3 * 16 * 9 * 32 * 32 + 2 * 64 * 10
    assert sorted(set(per_block)) == [7_077_888, 9_437_184] and per_block.count(7_077_888) == 2
    total = base + sum(per_block)
    assert total == 505_775_360
    assert total == pytest.approx(5.06e8, rel=0.005)  # dissertation


def test_imagenet_resnet101_matches_dissertation():
    report = flops_report("imagenet_resnet101")
    assert report["blocks"] == len(report["per_block"]) == 33
    assert report["flops"] == report["base_flops"] + sum(report["per_block"]) == 15_602_810_880
    assert report["flops"] == pytest.approx(1.56e10, rel=0.005)  # dissertation
    assert report["policy"] == {
        "name": "policy_resnet10_imagenet",
        "flops": 471_917_568,
        "input_size": [3, 224, 224],
    }


def test_flops_report_keys():
    report = flops_report("cifar_resnet32", debug=True)
    json.dumps(report)
    model = build_model("cifar_resnet32", debug=True)
    assert report["blocks"] == model.num_blocks == len(report["per_block"])
    assert report["flops"] == report["base_flops"] + sum(report["per_block"]) == count_flops(model)
    assert report["input_size"] == list(model.input_size) == [3, 32, 32]
    assert report["policy"]["name"] == model.policy_name
    policy = build_model(model.policy_name, num_blocks=model.num_blocks, debug=True)
    assert report["policy"]["flops"] == count_flops(policy)
    assert report["flops_with_policy"] == report["flops"] + report["policy"]["flops"]
    assert flops_report("cifar_resnet32", input_size=(3, 16, 16), debug=True)["flops"] < report["flops"]


def test_flops_report_for_a_policy_net():
    report = flops_report("policy_resnet8_cifar", num_blocks=15)
    assert report["outputs"] == 15 and report["blocks"] == 3
    assert report["flops"] == count_flops(build_model("policy_resnet8_cifar", num_blocks=15))
