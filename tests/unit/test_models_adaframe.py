"""AdaFrame's maths (rewards, returns, lookahead stop, PE), its network and the two baselines."""

from __future__ import annotations

import math

import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.models.adaframe import (
    AdaFrameNet,
    adaframe_flops,
    adaptive_prediction,
    discounted_returns,
    gather_frames,
    lookahead_stop,
    margins,
    positional_encoding,
    rewards,
    sample_frames,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- maths ------------------------------------------------------------------------------
PROBS = torch.tensor(
    [
        # label 0: margins 0.2, -0.1, 0.5, 0.3
        [[0.5, 0.3, 0.2], [0.4, 0.5, 0.1], [0.7, 0.2, 0.1], [0.6, 0.3, 0.1]],
        # label 2: margins 0.2, 0.7, 1.0 (masked), 0.8 (masked)
        [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.0, 0.0, 1.0], [0.1, 0.0, 0.9]],
    ]
)
LABELS = torch.tensor([0, 2])


def test_margins_by_hand():
    expected = torch.tensor([[0.2, -0.1, 0.5, 0.3], [0.2, 0.7, 1.0, 0.8]])
    torch.testing.assert_close(margins(PROBS, LABELS), expected)


def test_rewards_count_gains_over_the_best_margin_so_far():
    m = margins(PROBS, LABELS)
    # video 0: r_1 = 0; -0.1 < 0.2 -> 0; 0.5 - 0.2 = 0.3; 0.3 < 0.5 -> 0
    # video 1: r_1 = 0; 0.7 - 0.2 = 0.5; the rest are masked
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    expected = torch.tensor([[0.0, 0.0, 0.3, 0.0], [0.0, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(rewards(m, mask), expected)
    unmasked = rewards(m)  # video 1 then gains 1.0 - 0.7 = 0.3 at step 3, nothing at step 4
    torch.testing.assert_close(unmasked[1], torch.tensor([0.0, 0.5, 0.3, 0.0]))


def test_a_masked_step_never_sets_the_running_best():
    m = torch.tensor([[0.1, 0.9, 0.4]])
    mask = torch.tensor([[True, False, True]])
    torch.testing.assert_close(rewards(m, mask), torch.tensor([[0.0, 0.0, 0.3]]))


def test_discounted_returns_by_hand_with_a_masked_tail():
    r = torch.tensor([[1.0, 0.0, 2.0, 5.0], [0.0, 1.0, 0.0, 1.0]])
    mask = torch.tensor([[True, True, True, False], [True] * 4])
    # video 0: R_3 = 2, R_2 = 0 + 0.9*2 = 1.8, R_1 = 1 + 0.9*1.8 = 2.62; the masked reward 5 is dropped
    # video 1: R_4 = 1, R_3 = 0.9, R_2 = 1 + 0.81 = 1.81, R_1 = 0.9*1.81 = 1.629
    expected = torch.tensor([[2.62, 1.8, 2.0, 0.0], [1.629, 1.81, 0.9, 1.0]])
    torch.testing.assert_close(discounted_returns(r, 0.9, mask), expected)
    torch.testing.assert_close(discounted_returns(r, gamma=0.0), r)


def test_lookahead_stops_after_patience_runs_out():
    # running max 1, 2, 2, 2, 2, 2; drops 0, 0, .5, .2, .8, 1.0; over μ = .25 at steps 2, 4, 5
    values = torch.tensor([[1.0, 2.0, 1.5, 1.8, 1.2, 1.0]])
    assert lookahead_stop(values, 0.25, patience=0).tolist() == [2]
    assert lookahead_stop(values, 0.25, patience=1).tolist() == [4]
    assert lookahead_stop(values, 0.25, patience=2).tolist() == [5]
    assert lookahead_stop(values, 0.25, patience=3).tolist() == [5]  # never past the end
    assert lookahead_stop(values, 0.9, patience=0).tolist() == [5]  # only the last drop exceeds .9


def test_lookahead_never_stops_past_a_videos_last_step():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 1.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False]])
    assert lookahead_stop(values, 0.5, patience=0, mask_BT=mask).tolist() == [3, 2, 1]
    assert lookahead_stop(values, 0.5, patience=2, mask_BT=mask).tolist() == [3, 3, 1]


def test_positional_encoding_at_zero_and_one():
    pe = positional_encoding(torch.tensor([[0.0, 1.0], [0.5, 0.0]]), dim=5)
    assert pe.shape == (2, 2, 5)
    torch.testing.assert_close(pe[0, 0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(pe[1, 1], pe[0, 0])
    freq = math.exp(-math.log(10000.0) * 2 / 5)
    expected = torch.tensor([math.sin(1000.0), math.cos(1000.0), math.sin(1000.0 * freq), math.cos(1000.0 * freq)])
    torch.testing.assert_close(pe[0, 1, :4], expected)


# -- the network ------------------------------------------------------------------------
def _batch(seed: int = 0, n: int = 10):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, n])
    return torch.randn(2, n, 12, generator=gen), lengths, torch.randn(2, n, 8, generator=gen)


def _net() -> AdaFrameNet:
    torch.manual_seed(0)
    return build_model("adaframe_lstm", debug=True)


@pytest.mark.parametrize("sample", [True, False])
def test_rollout_shapes_and_locations_inside_each_video(sample):
    net = _net()
    features, lengths, memory = _batch()
    out = net(features, lengths, memory, steps=5, sample=sample, generator=torch.Generator().manual_seed(1))
    assert out.logits.shape == (2, 5, 5)
    assert out.values.shape == out.log_probs.shape == out.locations.shape == out.mask.shape == (2, 5)
    assert out.locations.dtype == torch.long
    assert out.locations[:, 0].tolist() == [1, 4]  # the middle frame: round(0.5 * (L - 1))
    assert bool((out.locations >= 0).all()) and bool((out.locations < lengths.unsqueeze(1)).all())
    assert out.mask.tolist() == [[True, True, True, False, False], [True] * 5]
    assert bool((out.log_probs[:, -1] == 0).all())
    if not sample:  # ℓ = a_t: the log-density at the mean
        torch.testing.assert_close(
            out.log_probs[:, :-1], torch.full((2, 4), -math.log(0.1) - 0.5 * math.log(2 * math.pi))
        )
    logits, stop = adaptive_prediction(out, margin=0.0, patience=0)
    assert logits.shape == (2, 5) and bool((stop <= out.last_step()).all())


def test_loss_backward_reaches_every_parameter():
    net = _net()
    features, lengths, memory = _batch()
    out = net(features, lengths, memory, steps=4, sample=True, generator=torch.Generator().manual_seed(2))
    losses = net.loss(out, torch.tensor([1, 3]))
    assert set(losses) == {"loss", "cls", "util", "sel", "reward"}
    torch.testing.assert_close(losses["loss"], losses["cls"] + losses["util"] - losses["sel"])
    losses["loss"].backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert bool(p.grad.abs().sum() > 0), name
    all_steps = net.loss(out, torch.tensor([1, 3]), cls_all_steps=True)["cls"]
    assert torch.isfinite(all_steps)


def test_sampling_is_deterministic_under_a_generator():
    net = _net()
    features, lengths, memory = _batch()

    def run(seed):
        return net(features, lengths, memory, steps=6, sample=True, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a.locations, b.locations) and torch.equal(a.logits, b.logits)
    assert not torch.equal(a.log_probs, c.log_probs)


def test_padded_frames_are_never_read():
    net = _net()
    features, lengths, memory = _batch()
    padded_f, padded_m = features.clone(), memory.clone()
    padded_f[0, 3:] = float("nan")
    padded_m[0, 3:] = float("nan")
    for sample in (True, False):
        a = net(features, lengths, memory, steps=5, sample=sample, generator=torch.Generator().manual_seed(5))
        b = net(padded_f, lengths, padded_m, steps=5, sample=sample, generator=torch.Generator().manual_seed(5))
        for field in ("logits", "values", "log_probs", "locations"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_bad_inputs_say_what_is_wrong():
    net = _net()
    features, lengths, memory = _batch()
    with pytest.raises(ConfigError, match="lengths"):
        net(features, torch.tensor([0, 3]), memory, steps=2, sample=False)
    with pytest.raises(ConfigError, match="feature_dim"):
        net(features[..., :5], lengths, memory, steps=2, sample=False)
    with pytest.raises(ConfigError, match="pe_dim"):
        AdaFrameNet(4, 4, 2, hidden=4, pe_dim=6)


def test_flops_count_every_weight_once_plus_the_attention():
    with torch.device("meta"):
        net = build_model("adaframe_lstm")
    weights = sum(p.numel() for name, p in net.named_parameters() if "bias" not in name)
    macs = adaframe_flops(2048, 2048, 1280, 16, 239)
    assert macs == weights + 2 * 16 * 1280 == 47_196_160
    assert adaframe_flops(2048, 2048, 1280, 16, 239, flops_per_mac=2) == 2 * macs


# -- baselines --------------------------------------------------------------------------
def test_avgpool_averages_valid_frames_only():
    torch.manual_seed(0)
    model = build_model("avgpool_classifier", debug=True)
    features, lengths, _ = _batch()
    padded = features.clone()
    padded[0, 3:] = float("nan")
    expected = model.fc(torch.stack([features[0, :3].mean(0), features[1].mean(0)]))
    torch.testing.assert_close(model(padded, lengths), expected)


def test_lstm_baseline_ignores_padding():
    torch.manual_seed(0)
    model = build_model("lstm_classifier", debug=True)
    features, lengths, _ = _batch()
    padded = features.clone()
    padded[0, 3:] = 1e6
    out = model(padded, lengths)
    torch.testing.assert_close(out, model(features, lengths))
    torch.testing.assert_close(out[0], model(features[:1, :3], torch.tensor([3]))[0])
    out.sum().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def test_sample_frames_uniform_and_random():
    lengths = torch.tensor([10, 3, 1])
    uniform = sample_frames(lengths, 5, "uniform")
    assert uniform.tolist() == [[1, 3, 5, 7, 9], [0, 0, 1, 2, 2], [0, 0, 0, 0, 0]]
    random = sample_frames(lengths, 5, "random", torch.Generator().manual_seed(0))
    assert random.shape == (3, 5) and bool((random >= 0).all()) and bool((random < lengths.unsqueeze(1)).all())
    assert bool((random.diff(dim=1) >= 0).all())
    assert torch.equal(random, sample_frames(lengths, 5, "random", torch.Generator().manual_seed(0)))
    features = torch.arange(10.0).view(1, 10, 1).expand(3, 10, 1)
    assert gather_frames(features, uniform)[0, :, 0].tolist() == [1.0, 3.0, 5.0, 7.0, 9.0]
    with pytest.raises(ConfigError, match="uniform"):
        sample_frames(lengths, 5, "dense")
