"""DCAN's networks: AdaIN and Gram statistics, the split segmentation nets, the generator, ImageNet weights."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.models.dcan import SegNet, adain, channel_stats, fc_from_vgg_classifier, gram
from frugalcv.workflows import kit


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SEGNETS = {"fcn8s_vgg16": 7, "fcn8s_resnet101": 5, "pspnet_resnet50": 5}  # name: number of groups


def test_adain_gives_the_style_statistics():
    gen = torch.Generator().manual_seed(0)
    content = torch.randn(3, 5, 6, 7, generator=gen) * 2 + 1
    style = torch.randn(3, 5, 4, 4, generator=gen) * 3 - 2
    mean, std = channel_stats(adain(content, style))
    style_mean, style_std = channel_stats(style)
    torch.testing.assert_close(mean, style_mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(std, style_std, rtol=0, atol=1e-4)


def test_adain_pools_the_k_targets_of_each_source():
    gen = torch.Generator().manual_seed(1)
    content = torch.randn(2, 4, 5, 5, generator=gen)
    # per target image its own scale and shift, so pooling differs from averaging means and stds
    style = torch.randn(4, 4, 3, 6, generator=gen) * torch.arange(1.0, 5.0).view(4, 1, 1, 1) + torch.randn(4, 4, 1, 1)
    mean, std = channel_stats(adain(content, style))
    # statistics of each source's two targets taken over all their pixels together
    pairs = torch.cat([style[0::2], style[1::2]], dim=3)
    pair_mean, pair_std = channel_stats(pairs)
    torch.testing.assert_close(mean, pair_mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(std, pair_std, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="whole multiple"):
        adain(content, style[:3])


def test_gram_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    x[0, 1] *= -1  # channels f and -f: F Fᵀ = [[30, -30], [-30, 30]], C·H·W = 8
    torch.testing.assert_close(gram(x), torch.tensor([[[3.75, -3.75], [-3.75, 3.75]]]))
    y = torch.arange(6.0).view(1, 2, 1, 3)  # rows (0, 1, 2) and (3, 4, 5): 5, 14, 50 over 6
    torch.testing.assert_close(gram(y), torch.tensor([[[5.0, 14.0], [14.0, 50.0]]]) / 6)


def _step(net: nn.Module, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    net.train()
    logits = net(source, target)
    labels = torch.arange(2 * 32 * 32).remainder(net.num_classes).view(2, 32, 32)
    loss = nn.functional.cross_entropy(logits, labels)
    loss.backward()
    return loss


@pytest.mark.parametrize("name", SEGNETS)
def test_debug_segnet_trains_one_step_with_a_target_batch(name):
    torch.manual_seed(0)
    net = build_model(name, num_classes=5, debug=True)
    assert isinstance(net, SegNet) and net.align_at == 3
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    before = [p.detach().clone() for p in net.parameters()]
    loss = _step(net, torch.rand(2, 3, 32, 32), torch.rand(4, 3, 32, 32))  # two targets per source
    assert torch.isfinite(loss)
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    optimizer.step()
    assert all(torch.isfinite(p).all() and not torch.equal(a, p)
               for a, p in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("name", SEGNETS)
def test_every_split_point_builds_and_runs(name):
    torch.manual_seed(0)
    source, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 48, 40)  # another size: encoded apart
    for align_at in range(1, SEGNETS[name] + 1):
        net = build_model(name, num_classes=3, align_at=align_at, debug=True).train()
        feats = net.encode(source)
        assert net.decode(feats, (32, 32)).shape == (2, 3, 32, 32)
        out = net(source, target)
        assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all(), align_at
    for bad in (0, SEGNETS[name] + 1):
        with pytest.raises(ConfigError, match=rf"align_at={bad}.*allowed: 1\.\.{SEGNETS[name]}"):
            build_model(name, align_at=bad, debug=True)


@pytest.mark.parametrize("name", SEGNETS)
def test_no_alignment_at_evaluation(name):
    torch.manual_seed(0)
    net = build_model(name, num_classes=4, debug=True)
    x, a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32) * 3
    net.train()
    with torch.no_grad():
        net(x, a)  # BN running statistics that are not the initial ones
        torch.manual_seed(1)
        trained_a = net(x, a)
        torch.manual_seed(1)
        assert not torch.allclose(trained_a, net(x, b))  # training does align
        net.eval()
        plain = net(x)
        assert torch.equal(net(x, target=a), plain) and torch.equal(net(x, target=b), plain)


def test_generator_trains_only_its_decoder():
    torch.manual_seed(0)
    gen = build_model("dcan_generator", debug=True)
    gen.train()
    assert not gen.encoder.training and gen.decoder.training
    out = gen(torch.rand(2, 3, 32, 32), torch.rand(4, 3, 32, 32))
    assert out.image.shape == (2, 3, 32, 32) and len(out.target_feats) == 4
    assert out.aligned.shape[1] == gen.encoder.channels
    # ĥ carries the pooled relu4_1 means of each source's two targets
    target_means = channel_stats(out.target_feats[-1])[0]
    torch.testing.assert_close(channel_stats(out.aligned)[0], (target_means[0::2] + target_means[1::2]) / 2,
                               rtol=0, atol=1e-4)
    losses = gen.loss(out)
    assert set(losses) == {"gen", "content", "style"}
    torch.testing.assert_close(losses["gen"], losses["content"] + losses["style"])
    losses["gen"].backward()
    for pname, p in gen.encoder.named_parameters():
        assert p.grad is None and not p.requires_grad, pname
    for pname, p in gen.decoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    assert not gen.train().encoder.training


def test_output_strides():
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert build_model("pspnet_resnet50", align_at=5, debug=True).encode(x)[-1].shape[-2:] == (8, 8)
        fcn = build_model("fcn8s_resnet101", align_at=5, debug=True)
        assert [f.shape[-1] for f in fcn.encode(x)] == [8, 4, 2]  # layer2, layer3 skips; layer4
        vgg = build_model("fcn8s_vgg16", align_at=7, debug=True)
        assert [f.shape[-1] for f in vgg.encode(x)] == [8, 4, 2]  # pool3, pool4 skips; fc7


def test_generator_output_keeps_the_source_size():
    gen = build_model("dcan_generator", debug=True)
    with torch.no_grad():
        assert gen(torch.rand(1, 3, 36, 44), torch.rand(1, 3, 32, 32)).image.shape == (1, 3, 36, 44)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_a_shallower_generator_stops_at_its_tap_and_keeps_torchvision_names(depth):
    gen = build_model("dcan_generator", depth=depth, debug=True)
    out = gen(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    assert out.image.shape == (2, 3, 32, 32) and len(out.target_feats) == depth
    assert out.aligned.shape[-1] == 32 // 2 ** (depth - 1)
    full = set(build_model("dcan_generator", debug=True).encoder.state_dict())
    assert set(gen.encoder.state_dict()) < full  # a prefix of VGG-19's layers, under their names
    gen.loss(out)["gen"].backward()
    assert all(p.grad is not None for p in gen.decoder.parameters())


def test_a_generator_depth_outside_1_to_4_is_refused():
    with pytest.raises(ConfigError, match="depth=5: expected 1..4"):
        build_model("dcan_generator", depth=5)


def _saved(tmp_path, name: str, reference: nn.Module) -> tuple[str, dict[str, torch.Tensor]]:
    state = reference.state_dict()
    path = tmp_path / f"{name}.pt"
    torch.save(state, path)
    return str(path), state


def _loads(module: nn.Module, url: str, state: dict[str, torch.Tensor]) -> None:
    result = kit.load_pretrained(module, url, allow_unexpected=True)
    assert not result["missing"] and not result["mismatched"]
    own = module.state_dict()
    assert set(own) <= set(state)
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_torchvision_weights_load(tmp_path):
    """State dicts of torchvision's own ImageNet nets fill every backbone tensor (VGGs keep PyTorch's
    default initialisation: their own second pass over 120M weights only costs time)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    reference = torchvision.models.vgg19(weights=None, init_weights=False)
    url, state = _saved(tmp_path, "vgg19", reference)
    encoder = build_model("dcan_generator").encoder
    _loads(encoder, url, state)
    with torch.no_grad():  # relu4_1 of the normalised image, as torchvision's network computes it
        normalised = torchvision.transforms.functional.normalize(x, encoder.mean.flatten(), encoder.std.flatten())
        assert torch.equal(encoder(x)[-1], reference.features[:21](normalised))
    del reference, encoder
    url, state = _saved(tmp_path, "vgg16", torchvision.models.vgg16(weights=None, init_weights=False))
    net = build_model("fcn8s_vgg16")
    _loads(net.backbone, url, state)
    net.load_state_dict(fc_from_vgg_classifier(state), strict=False)
    assert torch.equal(net.fc6[0].weight.flatten(1), state["classifier.0.weight"])
    assert torch.equal(net.fc7[0].weight.flatten(1), state["classifier.3.weight"])
    del net, state
    url, state = _saved(tmp_path, "resnet50", torchvision.models.resnet50(weights=None))
    _loads(build_model("pspnet_resnet50").backbone, url, state)
    reference = torchvision.models.resnet101(weights=None).eval()
    url, state = _saved(tmp_path, "resnet101", reference)
    net = build_model("fcn8s_resnet101", align_at=5).eval()
    _loads(net.backbone, url, state)
    with torch.no_grad():
        trunk = nn.Sequential(*list(reference.children())[:-2])  # all but avgpool and fc
        assert torch.equal(net.encode(x)[-1], trunk(x))
