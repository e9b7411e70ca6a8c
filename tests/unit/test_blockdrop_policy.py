"""BlockDrop's equations on hand-made tensors."""

import math

import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.workflows.blockdrop import policy as P
from frugalcv.workflows.blockdrop.baselines import (
    BASELINES,
    baseline_policy,
    distributek_policy,
    firstk_policy,
    randomk_policy,
)


def test_bound_probs_maps_into_alpha_interval():
    s = torch.tensor([[0.0, 0.5, 1.0, 0.25]])
    # s' = 0.8 s + 0.2 (1 - s)
    torch.testing.assert_close(P.bound_probs(s, 0.8), torch.tensor([[0.2, 0.5, 0.8, 0.35]]))
    torch.testing.assert_close(P.bound_probs(s, 1.0), s)


def test_reward_eq_2_3():
    u = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    correct = torch.tensor([True, True, False, True])
    r = P.policy_reward(u, correct, gamma=5.0)
    # 1 - (2/4)^2, 1 - (4/4)^2, -gamma, 1 - (1/4)^2
    torch.testing.assert_close(r, torch.tensor([0.75, 0.0, -5.0, 0.9375]))


def test_self_critical_advantage_eq_2_6():
    sampled = torch.tensor([0.75, -5.0, 0.5])
    greedy = torch.tensor([0.5, 0.5, 0.5])
    torch.testing.assert_close(P.self_critical_advantage(sampled, greedy), torch.tensor([0.25, -5.5, 0.0]))


def test_greedy_and_sampled_policies():
    s = torch.tensor([[0.1, 0.5, 0.51, 0.9]])
    torch.testing.assert_close(P.greedy_policy(s), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    g = torch.Generator().manual_seed(0)
    samples = P.sample_policy(s.expand(20000, 4), generator=g)
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(samples.mean(0), s[0], atol=0.02, rtol=0)


def test_policy_gradient_loss_matches_hand_computation():
    probs = torch.tensor([[0.8, 0.2], [0.5, 0.6]], requires_grad=True)
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    adv = torch.tensor([2.0, -1.0])
    loss = P.policy_gradient_loss(probs, u, adv)
    # log pi: row0 log .8 + log .8; row1 log .5 + log .6
    expected = -(2.0 * 2 * math.log(0.8) - 1.0 * (math.log(0.5) + math.log(0.6))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dp of -(A/B) log p for u=1 is -(A/B)/p; for u=0 it is (A/B)/(1-p)
    torch.testing.assert_close(probs.grad, torch.tensor([[-1 / 0.8, 1 / 0.8], [-0.5 / 0.5, 0.5 / 0.6]]))


def test_policy_gradient_loss_masks_forced_blocks_and_adds_entropy():
    probs = torch.tensor([[0.3, 0.6, 0.9]], requires_grad=True)
    u = torch.ones(1, 3)
    mask = torch.tensor([False, False, True])
    loss = P.policy_gradient_loss(probs, u, torch.tensor([1.0]), mask, entropy_weight=0.1)
    loss.backward()
    assert probs.grad[0, :2].abs().sum() == 0 and probs.grad[0, 2] != 0
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert loss.item() == pytest.approx(-(math.log(0.9) + 0.1 * h), rel=1e-6)


def test_curriculum_schedule_and_masking():
    k = 5
    assert [P.learned_blocks_at_epoch(e, k) for e in range(7)] == [1, 2, 3, 4, 5, 5, 5]
    mask = P.curriculum_mask(k, 2)
    assert mask.tolist() == [False, False, False, True, True]
    u = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0]])
    assert P.apply_curriculum(u, mask).tolist() == [[1.0, 1.0, 1.0, 0.0, 1.0]]
    assert P.curriculum_mask(k, 99).all() and not P.curriculum_mask(k, 0).any()


@pytest.mark.parametrize("k", [0, 1, 4, 7, 15])
def test_baselines_keep_exactly_k_blocks(k):
    g = torch.Generator().manual_seed(0)
    for name in BASELINES:
        policy = baseline_policy(name, 6, 15, k, g)
        assert policy.shape == (6, 15)
        assert (policy.sum(1) == k).all(), name


def test_baseline_layouts():
    assert firstk_policy(1, 6, 2).tolist() == [[1, 1, 0, 0, 0, 0]]
    assert distributek_policy(1, 7, 3).tolist() == [[1, 0, 0, 1, 0, 0, 1]]
    assert distributek_policy(1, 15, 8)[0].nonzero().squeeze(1).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    r = randomk_policy(500, 10, 3, torch.Generator().manual_seed(0))
    assert (r.mean(0) - 0.3).abs().max() < 0.08  # every block is about equally likely
    assert len({tuple(row) for row in r.int().tolist()}) > 50
    with pytest.raises(ConfigError, match="between 0 and num_blocks"):
        firstk_policy(1, 4, 5)
    with pytest.raises(ConfigError, match="known: firstk"):
        baseline_policy("lastk", 1, 4, 2)
