"""LiteEval's networks: the Gumbel gate, synchronisation, padding, forced gates, the loss and the FLOPs."""

from __future__ import annotations

import math

import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.models.liteeval import (
    LiteEvalNet,
    always_fine_decisions,
    gumbel_softmax_decision,
    hard_decision,
    liteeval_flops,
    online_logits,
    online_step,
    seq_k_decisions,
    uniform_k_decisions,
    video_macs,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_net(seed: int = 0) -> LiteEvalNet:
    torch.manual_seed(seed)
    return build_model("liteeval_lstm", debug=True)


def features(net: LiteEvalNet, batch: int, steps: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, steps, net.coarse_dim, generator=gen),
            torch.randn(batch, steps, net.fine_dim, generator=gen))


# --- the gate ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_hard_gumbel_decisions_are_categorical_samples_at_any_temperature(tau):
    p = 0.3
    logits = torch.tensor([[0.0, math.log(p / (1 - p))]]).repeat(20000, 1)
    d = gumbel_softmax_decision(logits, tau, generator=torch.Generator().manual_seed(0))
    assert d.shape == (20000,)
    assert set(d.unique().tolist()) <= {0.0, 1.0}
    assert abs(d.mean().item() - p) < 0.02  # std of the mean is 0.003


def test_straight_through_gradient_is_the_soft_samples():
    logits = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)).requires_grad_()
    weights = torch.arange(64.0)
    hard = gumbel_softmax_decision(logits, 0.5, generator=torch.Generator().manual_seed(3))
    (grad_hard,) = torch.autograd.grad((hard * weights).sum(), logits)
    soft = gumbel_softmax_decision(logits, 0.5, hard=False, generator=torch.Generator().manual_seed(3))
    (grad_soft,) = torch.autograd.grad((soft * weights).sum(), logits)
    assert torch.isfinite(grad_hard).all() and grad_hard.abs().sum() > 0
    torch.testing.assert_close(grad_hard, grad_soft)
    # same noise: the hard decision is the soft sample's argmax
    assert torch.equal(hard.detach(), (soft.detach() > 0.5).float())


def test_hard_decision_is_the_argmax_and_bad_gate_inputs_are_refused():
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.4]])
    assert hard_decision(logits).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\[B, 2\]"):
        gumbel_softmax_decision(torch.zeros(3, 3), 1.0)
    with pytest.raises(ValueError, match="tau must be > 0"):
        gumbel_softmax_decision(logits, 0.0)


# --- the recurrence ----------------------------------------------------------------------------------------

def test_synchronise_copies_the_first_coarse_dims_and_keeps_the_rest():
    net = tiny_net()
    dc = net.coarse_hidden
    h_f, c_f = torch.randn(3, net.fine_hidden), torch.randn(3, net.fine_hidden)
    h_c, c_c = torch.randn(3, dc), torch.randn(3, dc)
    h, c = net.synchronise(h_f, c_f, h_c, c_c)
    assert torch.equal(h[:, :dc], h_c) and torch.equal(c[:, :dc], c_c)
    assert torch.equal(h[:, dc:], h_f[:, dc:]) and torch.equal(c[:, dc:], c_f[:, dc:])


@torch.no_grad()
def test_one_step_by_hand_skip_and_read():
    net = tiny_net()
    coarse, fine = features(net, 2, 1)
    out = net(coarse, fine, torch.tensor([1, 1]), decisions=torch.tensor([[0.0], [1.0]]))
    h_c, _ = net.coarse_lstm(coarse[:, 0])
    skip = torch.cat([h_c[0], torch.zeros(net.fine_hidden - net.coarse_hidden)])  # synchronised zero state
    read, _ = net.fine_lstm(torch.cat([coarse[1, 0], fine[1, 0]])[None])
    torch.testing.assert_close(out.final_logits[0], net.classifier(skip))
    torch.testing.assert_close(out.final_logits[1], net.classifier(read[0]))
    # the gate saw the coarse feature and the (zero) previous fine state
    expected = net.gate(torch.cat([coarse[:, 0], torch.zeros(2, 2 * net.fine_hidden)], dim=1))
    torch.testing.assert_close(out.gate_logits[:, 0], expected)


@torch.no_grad()
def test_a_padded_video_gives_what_it_gives_alone():
    net = tiny_net().eval()
    coarse, fine = features(net, 2, 6)
    lengths = torch.tensor([6, 3])
    coarse[1, 3:], fine[1, 3:] = 1e3, -1e3  # padding garbage must not matter
    labels = torch.tensor([1, 2])
    batch = net(coarse, fine, lengths, mode="hard")
    alone = [net(coarse[i:i + 1, :n], fine[i:i + 1, :n], lengths[i:i + 1], mode="hard")
             for i, n in enumerate([6, 3])]
    assert batch.decisions[1, 3:].eq(0).all() and batch.gate_logits[1, 3:].eq(0).all()
    assert batch.decisions.sum() > 0 and (batch.decisions[batch.mask] == 0).any()  # a mixed pattern
    for i, n in enumerate([6, 3]):
        assert torch.equal(batch.decisions[i, :n], alone[i].decisions[0])
        torch.testing.assert_close(batch.logits[i, :n], alone[i].logits[0])
        torch.testing.assert_close(batch.final_logits[i], alone[i].final_logits[0])
    torch.testing.assert_close(batch.logits[1, 3:], batch.logits[1, 2:3].expand(3, -1))  # no state change
    terms = net.loss(batch, labels, gamma=0.25)
    per_video = [net.loss(alone[i], labels[i:i + 1], gamma=0.25) for i in range(2)]
    for key in ("loss", "ce", "gate", "fine_fraction"):
        torch.testing.assert_close(terms[key], (per_video[0][key] + per_video[1][key]) / 2)


def test_padded_steps_get_no_gradient_and_no_reads_when_sampling():
    net = tiny_net()
    coarse, fine = features(net, 2, 5)
    coarse.requires_grad_(), fine.requires_grad_()
    out = net(coarse, fine, torch.tensor([5, 2]), tau=0.5, generator=torch.Generator().manual_seed(0))
    assert out.decisions[1, 2:].eq(0).all()
    net.loss(out, torch.tensor([0, 1]), gamma=0.5)["loss"].backward()
    assert coarse.grad[1, 2:].eq(0).all() and fine.grad[1, 2:].eq(0).all()
    assert coarse.grad[1, :2].abs().sum() > 0


def test_fine_fraction_counts_valid_steps_only():
    net = tiny_net()
    coarse, fine = features(net, 2, 4)
    lengths = torch.tensor([4, 2])
    out = net(coarse, fine, lengths, decisions=torch.ones(2, 4))  # ones on padding are dropped
    assert out.decisions.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    terms = net.loss(out, torch.tensor([0, 1]), gamma=0.5, lam=2.0)
    assert terms["fine_fraction"].item() == 1.0  # (4/4 + 2/2) / 2, not 6/8
    assert terms["gate"].item() == 0.25
    torch.testing.assert_close(terms["loss"], terms["ce"] + 2.0 * terms["gate"])
    skip_half = net(coarse, fine, lengths, decisions=torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]]))
    terms = net.loss(skip_half, torch.tensor([0, 1]), gamma=0.5)
    assert terms["fine_fraction"].item() == 0.5 and terms["gate"].item() == 0.0


# --- forced gates (baselines) and the online prediction ----------------------------------------------------

def test_baseline_patterns_by_hand():
    lengths = torch.tensor([10, 8, 3])
    assert always_fine_decisions(lengths, 10).sum(1).tolist() == [10, 8, 3]
    seq = seq_k_decisions(lengths, 10, 4)
    assert seq[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert seq[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    uni = uniform_k_decisions(lengths, 10, 3)
    assert torch.nonzero(uni[0]).squeeze(1).tolist() == [1, 5, 8]
    assert torch.nonzero(uni[1]).squeeze(1).tolist() == [1, 4, 6]
    assert uni[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # k >= length: every step
    assert torch.nonzero(uniform_k_decisions(lengths, 10, 4)[1]).squeeze(1).tolist() == [1, 3, 5, 7]
    assert uniform_k_decisions(lengths, 10, 0).sum() == 0 and seq_k_decisions(lengths, 10, 0).sum() == 0
    with pytest.raises(ValueError, match="k is a number of fine reads"):
        seq_k_decisions(lengths, 10, -1)


@torch.no_grad()
def test_forced_always_fine_and_online_logits_pick_the_kth_read():
    net = tiny_net()
    coarse, fine = features(net, 2, 5)
    lengths = torch.tensor([5, 4])
    out = net(coarse, fine, lengths, decisions=always_fine_decisions(lengths, 5))
    assert out.decisions.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    pattern = torch.tensor([[0.0, 1, 0, 1, 1], [1, 0, 0, 1, 0]])
    out = net(coarse, fine, lengths, decisions=pattern)
    assert online_step(out, 1).tolist() == [1, 0]
    assert online_step(out, 2).tolist() == [3, 3]
    assert online_step(out, 3).tolist() == [4, 3]  # video 1 reads twice only: its last valid step
    for k in (1, 2, 3):
        steps = online_step(out, k)
        torch.testing.assert_close(online_logits(out, k), out.logits[torch.arange(2), steps])
        for i in range(2):  # the state right after that step: the video cut there predicts the same
            n = int(steps[i]) + 1
            cut = net(coarse[i:i + 1, :n], fine[i:i + 1, :n], torch.tensor([n]),
                      decisions=pattern[i:i + 1, :n])
            torch.testing.assert_close(online_logits(out, k)[i], cut.final_logits[0])
    with pytest.raises(ValueError, match="k >= 1"):
        online_logits(out, 0)


# --- training and evaluation -------------------------------------------------------------------------------

def test_sampled_loss_reaches_every_parameter_and_hard_mode_is_deterministic():
    net = tiny_net()
    coarse, fine = features(net, 3, 6)
    lengths = torch.tensor([6, 4, 5])
    out = net(coarse, fine, lengths, tau=1.0, mode="sample", generator=torch.Generator().manual_seed(1))
    assert 0 < out.decisions.sum() < out.mask.sum()  # mixed reads and skips
    terms = net.loss(out, torch.tensor([0, 3, 4]), gamma=0.3)
    terms["loss"].backward()
    assert all(torch.isfinite(v).all() for v in terms.values())
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with torch.no_grad():
        a, b = (net(coarse, fine, lengths, mode="hard") for _ in range(2))
    assert torch.equal(a.decisions, b.decisions) and torch.equal(a.logits, b.logits)
    again = net(coarse, fine, lengths, tau=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.decisions, out.decisions)  # sampling is reproducible under a generator


def test_bad_inputs_name_what_is_wrong():
    net = tiny_net()
    coarse, fine = features(net, 2, 3)
    lengths = torch.tensor([3, 2])
    with pytest.raises(ValueError, match="fine features must be"):
        net(coarse, fine[:, :2], lengths)
    with pytest.raises(ValueError, match=r"every length must be in \[1, T=3\]"):
        net(coarse, fine, torch.tensor([4, 0]))
    with pytest.raises(ValueError, match="mode must be one of sample, hard"):
        net(coarse, fine, lengths, mode="greedy")
    with pytest.raises(ValueError, match="forced decisions must be"):
        net(coarse, fine, lengths, decisions=torch.ones(2, 2))
    out = net(coarse, fine, lengths, mode="hard")
    with pytest.raises(ConfigError, match="gamma is the target fraction"):
        net.loss(out, torch.tensor([0, 1]), gamma=1.5)
    with pytest.raises(ConfigError, match="fine_hidden"):
        LiteEvalNet(4, 4, 2, coarse_hidden=8, fine_hidden=4)


# --- registry and FLOPs ------------------------------------------------------------------------------------

def test_registry_sizes_and_flops_by_hand():
    with torch.device("meta"):
        full = build_model("liteeval_lstm")
    assert full.dims == {"coarse_dim": 1280, "fine_dim": 2048, "coarse_hidden": 512, "fine_hidden": 2048,
                         "num_classes": 239}
    costs = liteeval_flops(**full.dims)
    assert costs["coarse_lstm"] == 4 * 512 * (1280 + 512) == 3_670_016
    assert costs["gate"] == 2 * (1280 + 2 * 2048) == 10_752
    assert costs["fine_read"] == 4 * 2048 * (1280 + 2048 + 2048) == 44_040_192
    assert costs["classifier"] == 2048 * 239
    # an LSTM cell's multiply-adds are its weight count
    assert costs["fine_read"] == full.fine_lstm.weight_ih.numel() + full.fine_lstm.weight_hh.numel()
    assert costs["every_step"] == costs["coarse_lstm"] + costs["gate"]
    assert video_macs(costs, 10, 3) == 10 * costs["every_step"] + 3 * costs["fine_read"] + costs["classifier"]
    debug = build_model("liteeval_lstm", debug=True, num_classes=7)
    assert debug.num_classes == 7 and debug.coarse_hidden < debug.fine_hidden
    assert sum(p.numel() for p in debug.parameters()) < 5_000
