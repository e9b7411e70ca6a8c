"""BlockDrop stages on the tiny debug models: one step each, gradients where expected."""

import json

import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.workflows.blockdrop.curriculum import (
    CurriculumConfig,
    CurriculumHook,
    CurriculumTask,
    frozen_logits,
)
from frugalcv.workflows.blockdrop.data import TensorBatches, digits_arrays
from frugalcv.workflows.blockdrop.evaluate import evaluate_policy
from frugalcv.workflows.blockdrop.finetune import FinetuneConfig, FinetuneTask
from frugalcv.workflows.blockdrop.pretrain import ClassificationTask, PretrainConfig, stochastic_depth_keep
from frugalcv.workflows.blockdrop.report import write_report
from frugalcv.workflows.engine.trainer import Trainer

METRICS = {
    "accuracy", "blocks_mean", "blocks_std", "blocks_min", "flops_mean", "flops_std", "full_accuracy",
    "full_flops", "flops_speedup", "unique_policies", "firstk_accuracy", "randomk_accuracy",
    "distributek_accuracy",
}  # fmt: skip


@pytest.fixture
def nets():
    torch.manual_seed(0)
    resnet = build_model("cifar_resnet32", debug=True)
    policy = build_model("policy_resnet8_cifar", num_blocks=resnet.num_blocks, debug=True)
    return resnet, policy


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)


def grads(module):
    return [p.grad for p in module.parameters()]


def test_curriculum_step_trains_only_the_policy(nets, batch):
    resnet, policy = nets
    resnet.train()  # the task must switch it to eval itself
    bn = resnet.bn1
    running_mean = bn.running_mean.clone()
    task = CurriculumTask(resnet, policy, CurriculumConfig(batch_size=8))
    task.learned = 2
    out = task.training_step(batch)
    assert torch.isfinite(out["loss"]) and out["learned_blocks"] == 2
    out["loss"].backward()
    assert not resnet.training and policy.training
    assert all(g is None for g in grads(resnet))
    torch.testing.assert_close(bn.running_mean, running_mean)  # frozen BN statistics
    logit_grad = policy.logit.weight.grad
    assert logit_grad is not None and torch.isfinite(logit_grad).all()
    # only the last 2 decisions are learned: the other rows of the output layer get no gradient
    assert logit_grad[:-2].abs().sum() == 0 and logit_grad[-2:].abs().sum() > 0


def test_curriculum_dynamic_and_masked_execution_agree(nets, batch):
    resnet, policy = nets
    losses = []
    for dynamic in (True, False):
        torch.manual_seed(1)
        task = CurriculumTask(resnet, policy, CurriculumConfig(batch_size=8, dynamic_execution=dynamic))
        losses.append(task.training_step(batch)["reward"])
    torch.testing.assert_close(losses[0], losses[1])


def test_frozen_logits_equal_the_masked_forward(nets, batch):
    resnet, _ = nets
    resnet.eval()
    images = batch[0]
    g = torch.Generator().manual_seed(3)
    k = resnet.num_blocks
    greedy = (torch.rand(8, k, generator=g) < 0.5).float()
    sampled = torch.where(torch.rand(8, k, generator=g) < 0.3, 1 - greedy, greedy)
    greedy[:, :2] = sampled[:, :2] = 1.0  # forced blocks agree
    sampled[0] = greedy[0]  # a row that never leaves the greedy path
    sampled[1, 2:] = 1 - greedy[1, 2:]  # one that leaves at the first learned block
    greedy[:, 3] = sampled[:, 3] = 0.0  # a block no row keeps
    with torch.no_grad():
        expected = resnet(images, keep=greedy), resnet(images, keep=sampled)
    got = frozen_logits(resnet, images, greedy, sampled)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_curriculum_hook_sets_the_stage_from_the_epoch(nets, batch):
    resnet, policy = nets
    cfg = CurriculumConfig(batch_size=8, epochs=4, epochs_per_stage=2, lr=1e-3)
    task = CurriculumTask(resnet, policy, cfg)
    seen = []
    orig = task.training_step
    task.training_step = lambda b: seen.append(task.learned) or orig(b)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    Trainer(task, opt, [batch], [CurriculumHook(task, cfg.epochs_per_stage)], epochs=cfg.epochs).train()
    assert seen == [1, 1, 2, 2]


def test_finetune_step_trains_both_networks(nets, batch):
    resnet, policy = nets
    for p in resnet.parameters():  # as left by the curriculum stage
        p.requires_grad_(False)
    task = FinetuneTask(resnet, policy, FinetuneConfig(batch_size=8))
    out = task.training_step(batch)
    assert torch.isfinite(out["loss"]) and set(out) >= {"ce", "policy_loss", "reward"}
    out["loss"].backward()
    assert resnet.training and policy.training
    assert all(g is not None and torch.isfinite(g).all() for g in grads(resnet))
    assert resnet.conv1.weight.grad.abs().sum() > 0

    # always right on label 0: rewards then differ by block usage, so the policy gets a gradient
    policy.zero_grad()
    resnet.fc.bias.data[0] = 100.0
    task.training_step((batch[0], torch.zeros_like(batch[1])))["loss"].backward()
    assert policy.logit.weight.grad is not None and policy.logit.weight.grad.abs().sum() > 0


def test_pretrain_step(nets, batch):
    resnet, _ = nets
    out = ClassificationTask(resnet).training_step(batch)
    out["loss"].backward()
    assert all(g is not None for g in grads(resnet))


def test_pretrain_step_with_stochastic_depth(nets, batch):
    resnet, _ = nets
    out = ClassificationTask(resnet, drop_path=0.5).training_step(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("rule", ["uniform", "linear"])
def test_stochastic_depth_drop_rates(rule):
    torch.manual_seed(0)
    dropped = 1 - stochastic_depth_keep(20000, 4, 0.4, rule).mean(0)
    expected = [0.4] * 4 if rule == "uniform" else [0.1, 0.2, 0.3, 0.4]
    assert dropped.tolist() == pytest.approx(expected, abs=0.015)


def test_evaluate_counts_flops_at_the_input_size(nets):
    resnet, policy = nets
    data = [(torch.randn(4, 3, 16, 16), torch.zeros(4, dtype=torch.long))]
    small = evaluate_policy(resnet, policy, data, baselines=False).metrics
    data32 = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))]
    assert evaluate_policy(resnet, policy, data32, baselines=False).metrics["full_flops"] == pytest.approx(
        4 * small["full_flops"], rel=0.02)


def test_evaluate_metrics_and_report(nets, tmp_path):
    resnet, policy = nets
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(20, 3, 32, 32, generator=g), torch.arange(20) % 4
    data = TensorBatches(images, labels, 8)
    ev = evaluate_policy(resnet, policy, data, seed=0)
    m = ev.metrics
    assert set(m) >= METRICS
    assert ev.policies.shape == (20, resnet.num_blocks) and ev.labels.tolist() == labels.tolist()
    assert m["blocks_min"] <= m["blocks_mean"] <= resnet.num_blocks
    assert m["baseline_k"] == min(resnet.num_blocks, -(-m["blocks_mean"] // 1))
    assert m["flops_speedup"] == pytest.approx(m["full_flops"] / m["flops_mean"])
    assert m["flops_mean"] >= m["policy_flops"]
    # the dynamic executor and the masked one give the same predictions
    masked = evaluate_policy(resnet, policy, data, seed=0, dynamic=False).metrics
    assert masked["accuracy"] == m["accuracy"] and masked["randomk_accuracy"] == m["randomk_accuracy"]
    json.dumps(m)  # plain floats
    text = write_report(str(tmp_path), title="t", before=ev, after=ev, gamma=5, notes=["n"])
    assert "| FirstK |" in text and "BlockDrop (learned)" in text
    for name in ("report.md", "accuracy_vs_flops.png", "block_usage.png", "policies_per_class.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_evaluate_accepts_a_one_shot_iterator(nets):
    resnet, policy = nets
    batches = iter([(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))])
    assert "firstk_accuracy" in evaluate_policy(resnet, policy, batches).metrics


def test_configs_reject_bad_values_with_a_fix():
    with pytest.raises(ConfigError, match="alpha=0.3.*paper uses 0.8"):
        CurriculumConfig(alpha=0.3)
    with pytest.raises(ConfigError, match="gamma >= 0"):
        FinetuneConfig(gamma=-1)
    with pytest.raises(ConfigError, match="BatchNorm"):
        PretrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match="drop_path_rule: 'halving': use 'uniform' or 'linear'"):
        PretrainConfig(drop_path_rule="halving")
    with pytest.raises(TypeError):
        CurriculumConfig(8)  # kw_only


def test_digits_arrays_match_the_shard_layout():
    x, y = digits_arrays("test")
    assert x.shape == (360, 3, 32, 32) and x.dtype == torch.uint8 and len(y) == 360
    assert y[:3].tolist() == [0, 5, 0]  # sklearn digits 0, 5, 10
