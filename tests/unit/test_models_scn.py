"""SCN's networks: offsets of hand-made boxes, the frozen top stream, the bottom stream's start,
the no-offset variant, pixel targets, torchvision's VGG-19 layout, a debug training step."""

import pytest
import torch
import torchvision

from frugalcv.models import build_model
from frugalcv.models.scn import SpatialContextNet, box_corners, box_offset, context_loss, scn_vgg19


def scn(seed=0, **kwargs):
    torch.manual_seed(seed)
    return SpatialContextNet(build_model("scn_cnn_m", debug=True, num_classes=3), **kwargs)


def patches(b=4, size=32, seed=1):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_offsets_of_hand_made_boxes():
    assert box_corners(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [1, 2, 3, 2, 3, 4, 1, 4]
    # b_i 40 px right of and 10 px below b_j in a 100 x 50 image
    o = box_offset(torch.tensor([[50.0, 20.0, 60.0, 30.0]]), torch.tensor([[10.0, 10.0, 20.0, 20.0]]), 100, 50)
    assert o.tolist() == [pytest.approx([0.4, 0.2] * 4)]
    # a wider partner: its right-hand corners move further than its left-hand ones
    o = box_offset(torch.tensor([[0.0, 0.0, 20.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]), 10, 10)
    assert o.tolist() == [[0, 0, 1, 0, 1, 0, 0, 0]]


def test_bottom_stream_starts_equal_to_the_top_and_is_a_copy():
    net = scn()
    top, bottom = net.top.state_dict(), net.bottom.state_dict()
    assert top.keys() == bottom.keys() and all(torch.equal(top[k], bottom[k]) for k in top)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(net.top.parameters(), net.bottom.parameters(), strict=True))
    x = patches()
    net.eval()
    assert torch.equal(net.features(x), net.original_features(x))


def test_only_the_bottom_fc_layers_and_the_context_module_train_by_default():
    net = scn()
    assert not any(q.requires_grad for q in net.top.parameters())
    assert not any(q.requires_grad for q in net.bottom.features.parameters())
    assert all(q.requires_grad for q in net.bottom.classifier[:5].parameters())
    assert all(q.requires_grad for q in [*net.v1.parameters(), *net.v_loc.parameters(), *net.v2.parameters()])
    assert all(q.requires_grad for q in scn(train_convs=True).bottom.features.parameters())


def test_a_step_leaves_the_top_stream_unchanged_and_without_gradient():
    net = scn()
    before = {k: v.clone() for k, v in net.top.state_dict().items()}
    bottom_before = {k: v.clone() for k, v in net.bottom.classifier.state_dict().items()}
    opt = torch.optim.SGD([q for q in net.parameters() if q.requires_grad], lr=0.5)
    net.train()
    assert not net.top.training  # the target never sees dropout
    x_i, x_j, o = patches(seed=1), patches(seed=2), torch.rand(4, 8)
    loss = context_loss(net(x_j, o), net.target(x_i))
    loss.backward()
    opt.step()
    assert all(q.grad is None for q in net.top.parameters())
    after = net.top.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(bottom_before[k], v) for k, v in net.bottom.classifier.state_dict().items())


def test_without_offsets_the_output_ignores_o():
    net = scn(use_offset=False).eval()
    assert net.v_loc is None
    x = patches()
    assert torch.equal(net(x, torch.zeros(4, 8)), net(x, torch.rand(4, 8) * 5))
    with_offsets = scn(use_offset=True).eval()
    assert not torch.equal(with_offsets(x, torch.zeros(4, 8)), with_offsets(x, torch.ones(4, 8)))


@torch.no_grad()
def test_eq_5_1_by_hand():
    net = scn().eval()
    x, o = patches(), torch.rand(4, 8)
    h1 = net.features(x)
    h3 = net.v2.weight @ torch.sigmoid(net.v1.weight @ h1.T + net.v1.bias[:, None] + net.v_loc.weight @ o.T)
    assert torch.allclose(net(x, o), h3.T + net.v2.bias, atol=1e-5)
    t = torch.randn(4, h3.shape[0])
    assert context_loss(net(x, o), t) == pytest.approx(float(((t - net(x, o)) ** 2).sum() / 4), rel=1e-5)


def test_pixel_targets_are_x_i_at_target_size():
    net = scn(target="pixels", target_size=8).eval()
    pixels = torch.rand(2, 3, 32, 32)
    target = net.target(patches(2), pixels)
    assert target.shape == (2, 3 * 8 * 8) and float(target.min()) >= 0 and float(target.max()) <= 1
    assert net(patches(2), torch.rand(2, 8)).shape == (2, 192)
    with pytest.raises(ValueError, match="features' or 'pixels'"):
        scn(target="edges")


def test_vgg19_has_torchvisions_names_and_shapes():
    with torch.device("meta"):
        theirs = {k: tuple(v.shape) for k, v in torchvision.models.vgg19().state_dict().items()}
        ours = {k: tuple(v.shape) for k, v in scn_vgg19().state_dict().items()}
    assert ours == theirs


@pytest.mark.parametrize("name", ["scn_cnn_m", "scn_vgg19"])
def test_debug_flavour_trains_a_step_without_nans(name):
    torch.manual_seed(0)
    net = SpatialContextNet(build_model(name, debug=True), train_convs=True)
    opt = torch.optim.SGD([q for q in net.parameters() if q.requires_grad], lr=0.01)
    x_i, x_j, o = patches(2, 32, 1), patches(2, 32, 2), torch.rand(2, 8)
    loss = context_loss(net(x_j, o), net.target(x_i))
    loss.backward()
    trained = [q for q in net.parameters() if q.requires_grad]
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in trained)
    opt.step()
    assert torch.isfinite(net(x_j, o)).all() and torch.isfinite(loss)
