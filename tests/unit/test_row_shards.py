"""RowShards: a batch split into row slices, each run on its own single-threaded worker."""

from __future__ import annotations

import pytest
import torch

from frugalcv.models import RowShards, build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("cifar_resnet32", debug=True)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 16, 16))  # non-trivial BN statistics
    return model.eval()


@pytest.mark.parametrize("workers", [2, 3])
def test_sharded_dynamic_forward_equals_one_call(model, workers):
    x = torch.randn(7, 3, 16, 16)
    keep = torch.bernoulli(torch.full((7, model.num_blocks), 0.5), generator=torch.Generator().manual_seed(1))
    with RowShards(workers) as shards, torch.inference_mode():
        out = shards(model.forward_dynamic, x, keep)
        assert out.is_inference()  # the caller's inference mode reached the workers
        torch.testing.assert_close(out, model(x, keep), rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_the_workers(model):
    x = torch.randn(4, 3, 16, 16)
    model.zero_grad()
    model(x).sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with RowShards(2) as shards:
        shards(model, x).sum().backward()
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)
    with RowShards(2) as shards, torch.no_grad():
        assert not shards(model, x).requires_grad


def test_workers_run_one_thread_and_leave_the_callers_count():
    threads = torch.get_num_threads()
    with RowShards(2) as shards:
        seen = shards(lambda t: torch.full((t.shape[0],), float(torch.get_num_threads())), torch.zeros(4))
    assert seen.tolist() == [1.0] * 4
    assert torch.get_num_threads() == threads


def test_small_batches_and_bad_input():
    with RowShards(4) as shards:
        assert shards(lambda t: t * 2, torch.ones(1, 3)).tolist() == [[2.0] * 3]  # one row: no split
        with pytest.raises(ValueError, match="same batch size"):
            shards(lambda a, b: a, torch.ones(4, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="workers >= 1"):
        RowShards(-1)
