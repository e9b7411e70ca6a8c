"""benchmarks/blockdrop_policy_masks.py: a trained policy's masks, written and read back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from frugalcv.models import build_model

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SHIPPED = BENCH / "data" / "blockdrop_resnet110_digits_masks.json"


@pytest.fixture
def masks_module(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import blockdrop_policy_masks

    return blockdrop_policy_masks


def _checkpoint(path: Path) -> None:
    """A finetune-stage model.pt of the tiny debug nets."""
    torch.manual_seed(0)
    resnet = build_model("cifar_resnet32", debug=True)
    policy = build_model("policy_resnet8_cifar", num_blocks=resnet.num_blocks, debug=True)
    with torch.no_grad():
        policy.logit.bias.copy_(torch.linspace(-3, 3, resnet.num_blocks))  # some blocks kept, some not
    state = {"model": "cifar_resnet32", "num_classes": 10, "debug": True,
             "preprocess": {"augment": "crop", "image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3},
             "resnet": resnet.state_dict(),
             "policy_model": "policy_resnet8_cifar", "policy": policy.state_dict()}  # fmt: skip
    torch.save(state, path)


def test_writes_the_greedy_masks_and_reads_them_back(tmp_path, masks_module):
    ckpt, out = tmp_path / "model.pt", tmp_path / "masks.json"
    _checkpoint(ckpt)
    summary = masks_module.main([str(ckpt), "digits", "--images", "12", "--out", str(out), "--source", "a test"])
    record = json.loads(out.read_text())
    assert summary["images"] == 12 and summary["num_blocks"] == 6 and summary["model"] == "cifar_resnet32"
    assert len(record["masks"]) == len(record["labels"]) == 12 and record["source"] == "a test"
    keep = masks_module.load_masks(str(out))
    assert keep.shape == (12, 6) and set(keep.unique().tolist()) <= {0.0, 1.0}
    assert summary["blocks_mean"] == pytest.approx(keep.sum(1).mean().item(), abs=0.01)
    assert 0 < summary["blocks_mean"] < 6  # the biases keep some blocks and drop others
    assert not (tmp_path / "masks.json.tmp").exists()


def test_bad_masks_files_name_the_file(tmp_path, masks_module):
    with pytest.raises(SystemExit, match="no such file"):
        masks_module.load_masks(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json: not a masks file"):
        masks_module.load_masks(str(bad))
    bad.write_text(json.dumps({"masks": ["0101", "01"]}))
    with pytest.raises(SystemExit, match="equal-length strings of 0 and 1"):
        masks_module.load_masks(str(bad))


def test_a_checkpoint_without_a_policy_is_refused(tmp_path, masks_module):
    ckpt = tmp_path / "pretrain.pt"
    _checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    del state["policy"]
    torch.save(state, ckpt)
    with pytest.raises(SystemExit, match="holds no policy"):
        masks_module.main([str(ckpt), "digits", "--out", str(tmp_path / "m.json")])


def test_the_shipped_masks_are_a_resnet110_policy_on_128_images(masks_module):
    record = json.loads(SHIPPED.read_text())
    keep = masks_module.load_masks(str(SHIPPED))
    assert record["model"] == "cifar_resnet110" and keep.shape == (128, 54)
    assert record["blocks_mean"] == pytest.approx(keep.sum(1).mean().item(), abs=0.01)


def test_inference_benchmark_times_the_shipped_masks():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "blockdrop_inference.py"), "--masks", str(SHIPPED), "--batch", "8",
         "--warmup", "0", "--repeats", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["masks"] == str(SHIPPED) and result["probs"] is None
    keep = json.loads(SHIPPED.read_text())["masks"][:8]
    assert result["blocks_kept_mean"] == pytest.approx(sum(m.count("1") for m in keep) / 8, abs=0.01)
    assert result["unique_policies"] == len(set(keep))
