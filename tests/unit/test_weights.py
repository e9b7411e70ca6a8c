"""``kit.load_pretrained`` on files saved from torchvision's own (randomly initialised) ResNets:
the BlockDrop ResNet-101 and the ResNet-10 policy use torchvision's parameter names, so the
weights the ImageNet recipe reads load by name, and a wrong, corrupt or absent file fails loudly."""

import re

import pytest
import torch
import torchvision

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.workflows.kit import load_pretrained


def _perturb_bn(model: torch.nn.Module, seed: int) -> None:
    """Random BN affine parameters and running statistics: torchvision initialises them to the same
    ones and zeros as frugalcv does, which would hide a BN tensor that was never loaded."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)


@pytest.fixture(scope="module")
def resnet101(tmp_path_factory):
    """torchvision's ResNet-101 (eval mode) and the file its state dict was saved to."""
    torch.manual_seed(0)
    model = torchvision.models.resnet101(weights=None)
    _perturb_bn(model, 1)
    path = tmp_path_factory.mktemp("weights") / "resnet101-63fe2227.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None)
    _perturb_bn(model, 2)
    path = tmp_path_factory.mktemp("weights") / "resnet18-f37072fd.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def _assert_equal_tensors(own: dict, theirs: dict, keys) -> None:
    for k in keys:
        assert torch.equal(own[k], theirs[k]), k


# ------------------------------------------------------------------------------ the recipe's files


def test_torchvision_resnet101_loads_completely_and_computes_the_same(resnet101):
    tv, path = resnet101
    ours = build_model("imagenet_resnet101", num_classes=1000)
    theirs = tv.state_dict()
    assert not torch.equal(ours.state_dict()["layer3.22.conv2.weight"], theirs["layer3.22.conv2.weight"])
    result = load_pretrained(ours, str(path))
    assert result["missing"] == result["unexpected"] == result["mismatched"] == []
    assert sorted(result["loaded"]) == sorted(theirs)  # every tensor, num_batches_tracked included
    _assert_equal_tensors(ours.state_dict(), theirs, theirs)
    ours.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = tv(x)
        assert torch.allclose(ours(x), expected, rtol=1e-5, atol=1e-5)
        keep_all = torch.ones(2, ours.num_blocks, dtype=torch.bool)
        assert torch.allclose(ours(x, keep_all), expected, rtol=1e-5, atol=1e-5)


def test_resnet101_file_into_another_head_with_allow_mismatch(resnet101):
    """The pretrain stage's call: ``allow_mismatch=("fc.",)`` for another number of classes."""
    tv, path = resnet101
    ours = build_model("imagenet_resnet101", num_classes=10)
    head = {k: v.clone() for k, v in ours.state_dict().items() if k.startswith("fc.")}
    with pytest.raises(ConfigError, match=r"other shapes than the model's, e\.g\. fc\.weight"):
        load_pretrained(build_model("imagenet_resnet101", num_classes=10), str(path))
    result = load_pretrained(ours, str(path), allow_mismatch=("fc.",))
    assert sorted(result["mismatched"]) == ["fc.bias", "fc.weight"]
    assert len(result["loaded"]) == len(tv.state_dict()) - 2
    _assert_equal_tensors(ours.state_dict(), tv.state_dict(), result["loaded"])
    _assert_equal_tensors(ours.state_dict(), head, head)  # the new head stays as initialised


def test_torchvision_resnet18_into_the_resnet10_policy(resnet18):
    tv, path = resnet18
    policy = build_model("policy_resnet10_imagenet")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    result = load_pretrained(policy, str(path), allow_missing=("logit.",), allow_unexpected=True)
    theirs, own = tv.state_dict(), policy.state_dict()
    assert sorted(result["missing"]) == ["logit.bias", "logit.weight"]
    assert result["mismatched"] == []
    # the first block of each segment (and the stem) come from ResNet-18; its second blocks and fc do not fit
    assert sorted(result["loaded"]) == sorted(k for k in own if not k.startswith("logit."))
    for segment in range(1, 5):
        assert any(k.startswith(f"layer{segment}.0.") for k in result["loaded"])
        assert any(k.startswith(f"layer{segment}.1.") for k in result["unexpected"])
    assert all(k.startswith(("fc.", "layer1.1.", "layer2.1.", "layer3.1.", "layer4.1."))
               for k in result["unexpected"])
    _assert_equal_tensors(own, theirs, result["loaded"])
    _assert_equal_tensors(own, before, ["logit.weight", "logit.bias"])  # the head stays
    assert policy(torch.zeros(1, 3, 224, 224)).shape == (1, 33)


def test_wrapped_and_ddp_prefixed_state_dicts_load(resnet18, tmp_path):
    tv, _ = resnet18
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}, "epoch": 90}, path)
    policy = build_model("policy_resnet10_imagenet")
    result = load_pretrained(policy, str(path), allow_missing=("logit.",), allow_unexpected=True)
    assert len(result["loaded"]) == len(policy.state_dict()) - 2
    _assert_equal_tensors(policy.state_dict(), tv.state_dict(), result["loaded"])


# ------------------------------------------------------------------------------ wrong files


def test_resnet18_file_into_resnet101_names_the_file_and_a_key(resnet18):
    _, path = resnet18
    model = build_model("imagenet_resnet101", num_classes=1000)
    before = model.state_dict()["conv1.weight"].clone()
    with pytest.raises(ConfigError) as err:
        load_pretrained(model, str(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "is it the right weights file?" in msg, msg
    assert "layer1.0.conv1.weight: file (64, 64, 3, 3), model (64, 64, 1, 1)" in msg, msg
    assert torch.equal(model.state_dict()["conv1.weight"], before)  # nothing half-loaded


def test_file_missing_tensors_names_them(resnet101, tmp_path):
    tv, _ = resnet101
    path = tmp_path / "no-layer4.pth"
    torch.save({k: v for k, v in tv.state_dict().items() if not k.startswith("layer4.")}, path)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: \d+ of the model's 626 tensors are not in the file "
                                          r"\(first: layer4\.0\.conv1\.weight"):
        load_pretrained(build_model("imagenet_resnet101"), str(path))


def test_file_with_extra_tensors_needs_allow_unexpected(resnet18):
    _, path = resnet18
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: 50 tensor\(s\) in the file have no place in the model "
                                          r"\(first: layer1\.1\."):
        load_pretrained(build_model("policy_resnet10_imagenet"), str(path), allow_missing=("logit.",))
    with pytest.raises(ConfigError, match=r"not in the file \(first: logit\.weight, logit\.bias\)"):
        load_pretrained(build_model("policy_resnet10_imagenet"), str(path), allow_unexpected=True)


def test_truncated_file(resnet18, tmp_path):
    _, good = resnet18
    data = good.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not a loadable weights file: .+; write it again with torch\.save .+$"):
        load_pretrained(build_model("policy_resnet10_imagenet"), str(path))


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>\n", bytes(range(256)) * 8],
                         ids=["empty", "html", "binary"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "resnet18-f37072fd.pth"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not a loadable weights file: .+; write it again with torch\.save .+$"):
        load_pretrained(build_model("policy_resnet10_imagenet"), str(path))


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: a weights file must hold a dict, got Tensor$"):
        load_pretrained(build_model("policy_resnet10_imagenet"), str(path))


def test_missing_file(tmp_path):
    path = tmp_path / "weights" / "resnet101-63fe2227.pth"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: weights file not found$"):
        load_pretrained(build_model("imagenet_resnet101"), str(path))
