"""The block-drop executors: masking (training) and dynamic gather/scatter (inference)."""

from __future__ import annotations

import pytest
import torch

from frugalcv.models import block_flops, build_model, fuse_batchnorm


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and steadiest on a shared CPU) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RESNETS = [("cifar_resnet32", (3, 16, 16)), ("imagenet_resnet101", (3, 32, 32))]


def _model_and_input(name, size, batch=4, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, debug=True)
    # non-trivial BN statistics, so eval-mode BN is not the identity
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *size))
    return model.eval(), torch.randn(batch, *size)


@pytest.mark.parametrize(("name", "size"), RESNETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_keep_all_equals_plain_forward_exactly(name, size, dtype):
    model, x = _model_and_input(name, size)
    ones = torch.ones(x.shape[0], model.num_blocks, dtype=dtype)
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(model(x, ones), plain)
        assert torch.equal(model(x, None), plain)
        assert torch.equal(model.forward_dynamic(x, ones), plain)


def test_keep_all_equals_plain_forward_in_training_mode():
    model, x = _model_and_input("cifar_resnet32", (3, 16, 16))
    model.train()
    torch.manual_seed(1)
    plain = model(x)
    assert torch.equal(model(x, torch.ones(x.shape[0], model.num_blocks)), plain)


@pytest.mark.parametrize(("name", "size"), RESNETS)
@pytest.mark.parametrize("dense_fraction", [0.9, 0.3, 1.1])  # default; most blocks dense; never dense
def test_dynamic_equals_masked(name, size, dense_fraction):
    model, x = _model_and_input(name, size, batch=6)
    model.dense_fraction = dense_fraction
    gen = torch.Generator().manual_seed(3)
    keep = torch.bernoulli(torch.full((6, model.num_blocks), 0.5), generator=gen)
    keep[:, 0] = 0  # a block nobody keeps
    keep[:, 1] = 1  # a block everybody keeps
    keep[:, 2] = 0
    keep[3, 2] = 1  # a block one row keeps
    keep[0] = 0  # a row that drops everything
    with torch.no_grad():
        masked = model(x, keep)
        torch.testing.assert_close(model.forward_dynamic(x, keep), masked, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.forward_dynamic(x, keep.bool()), masked, rtol=1e-5, atol=1e-5)
        assert torch.equal(model(x, keep.bool()), masked)


def _block_io(model, x, keep):
    """(input, output) of every block during the masked forward."""
    records = []
    hooks = [
        b.register_forward_hook(lambda m, args, out: records.append((args[0], out))) for b in model.blocks
    ]
    try:
        with torch.no_grad():
            model(x, keep)
    finally:
        for h in hooks:
            h.remove()
    return records


@pytest.mark.parametrize(("name", "size"), RESNETS)
def test_dropping_block_k_changes_only_what_follows(name, size):
    model, x = _model_and_input(name, size, batch=3)
    ones = torch.ones(3, model.num_blocks)
    reference = _block_io(model, x, ones)
    for k, block in enumerate(model.blocks):
        keep = ones.clone()
        keep[1, k] = 0  # only row 1 drops block k
        records = _block_io(model, x, keep)
        for j in range(k):
            assert torch.equal(records[j][1], reference[j][1]), f"block {j} before dropped {k} changed"
        block_in, block_out = records[k]
        if block.downsample is None:
            assert torch.equal(block_out[1], block_in[1])  # y_{k+1} = y_k
        else:  # a dropped downsampling block still runs its shortcut
            with torch.no_grad():
                assert torch.equal(block_out[1], block.shortcut(block_in)[1])
        assert not torch.equal(block_out[1], reference[k][1][1])
        for j in range(k, model.num_blocks):  # rows that keep every block are untouched
            assert torch.equal(records[j][1][[0, 2]], reference[j][1][[0, 2]])


def test_float_keep_is_differentiable():
    model, x = _model_and_input("cifar_resnet32", (3, 16, 16), batch=2)
    keep = torch.full((2, model.num_blocks), 0.5, requires_grad=True)
    model(x, keep).sum().backward()
    assert keep.grad is not None and torch.isfinite(keep.grad).all() and keep.grad.abs().sum() > 0


def test_dynamic_plan_picks_each_way_to_run_a_block():
    from frugalcv.models.blockdrop.resnet import _ALL, _NONE, _RANGE, _ROWS

    model, x = _model_and_input("cifar_resnet32", (3, 16, 16), batch=10)
    keep = torch.zeros(10, model.num_blocks)
    keep[:, 1] = 1  # everyone
    keep[:, 2] = 1
    keep[4, 2] = 0  # 9 of 10 rows >= dense_fraction 0.9: run on the batch, restore row 4
    keep[[0, 4, 8], 3] = 1  # 3 rows spread over 9: gather them
    keep[2:7, 4] = 1  # rows 2-6: run on that slice, nothing to restore
    keep[[0, 2, 3, 4, 5, 6, 7, 8, 9], 5] = 1  # 9 of the 10 rows in range 0-9: restore row 1
    plan = model._rows_per_block(keep, x.device)
    assert [kind for kind, _ in plan[:6]] == [_NONE, _ALL, _RANGE, _ROWS, _RANGE, _RANGE]
    assert plan[2][1][:2] == (0, 10) and plan[2][1][2].tolist() == [4]
    assert plan[3][1].tolist() == [0, 4, 8]
    assert plan[4][1] == (2, 7, None)
    assert plan[5][1][:2] == (0, 10) and plan[5][1][2].tolist() == [1]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_dynamic(x, keep), model(x, keep), rtol=1e-5, atol=1e-5)


def test_dynamic_keeps_channels_last_layout():
    model, x = _model_and_input("cifar_resnet32", (3, 16, 16), batch=5)
    keep = torch.bernoulli(torch.full((5, model.num_blocks), 0.5), generator=torch.Generator().manual_seed(0))
    model = model.to(memory_format=torch.channels_last)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_dynamic(x_nhwc, keep), model(x, keep), rtol=1e-5, atol=1e-5)


def test_keep_validation():
    model, x = _model_and_input("cifar_resnet32", (3, 16, 16), batch=2)
    with pytest.raises(ValueError, match=r"shape \[B, K\] = \[2, 6\]"):
        model(x, torch.ones(2, 5))
    with pytest.raises(ValueError, match="0/1"):
        model.forward_dynamic(x, torch.full((2, 6), 0.5))
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_dynamic(x, torch.ones(2, 6))


def test_forward_dynamic_does_not_modify_input():
    model, x = _model_and_input("cifar_resnet32", (3, 16, 16))
    x_before = x.clone()
    keep = torch.zeros(x.shape[0], model.num_blocks)
    keep[0] = 1
    model.forward_dynamic(x, keep)
    assert torch.equal(x, x_before)


@pytest.mark.parametrize(("name", "size"), RESNETS)
def test_fused_batchnorm_model_matches_and_keeps_flops(name, size):
    model, x = _model_and_input(name, size)
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # original untouched
    keep = torch.ones(x.shape[0], model.num_blocks)
    keep[1::2, ::2] = 0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fused.forward_dynamic(x, keep), model(x, keep), rtol=1e-4, atol=1e-5)
    assert block_flops(fused) == block_flops(model)


def _runs(rows: list[int]) -> int:
    """Number of maximal runs of consecutive integers in sorted ``rows``."""
    return sum(1 for i, r in enumerate(rows) if i == 0 or r != rows[i - 1] + 1)


def test_group_similar_rows_makes_kept_rows_contiguous():
    from frugalcv.models.blockdrop.resnet import _group_similar_rows, _moved_rows

    gen = torch.Generator().manual_seed(0)
    policies = torch.bernoulli(torch.full((4, 8), 0.5), generator=gen).bool()  # 4 distinct policies
    keep = policies[torch.randint(0, 4, (40,), generator=gen)]  # 40 rows sharing them, shuffled
    keep[:, 0], keep[:, 1] = True, False  # blocks every row / no row keeps take no part
    order = _group_similar_rows(keep)
    assert sorted(order.tolist()) == list(range(40))
    grouped = keep[order]
    for block in range(2, 8):  # at most one range of rows per distinct policy keeping the block
        rows = grouped[:, block].nonzero().squeeze(1).tolist()
        assert _runs(rows) <= max(1, len({tuple(p) for p in policies[policies[:, block]].tolist()}))
    counts = keep.sum(0)
    partial = [k for k in range(8) if 0 < counts[k] < 40]
    moved = _moved_rows(grouped[:, partial], 0.9)
    assert moved < _moved_rows(keep[:, partial], 0.9)  # the plan moves fewer rows than before
    # rows keeping the block it ranked first are one range (the most kept or the most mixed one)
    assert any(_runs(grouped[:, k].nonzero().squeeze(1).tolist()) == 1 for k in partial)
    for i in range(1, 40):  # identical policies sit side by side
        if torch.equal(grouped[i], grouped[i - 1]):
            continue
        assert not any(torch.equal(grouped[j], grouped[i - 1]) for j in range(i, 40))
    assert _group_similar_rows(torch.ones(5, 3, dtype=torch.bool)) is None  # nothing to group
    assert _group_similar_rows(grouped) is None  # already grouped


def test_moved_rows_prices_ranges_and_gathers():
    from frugalcv.models.blockdrop.resnet import _moved_rows

    keep = torch.zeros(10, 3, dtype=torch.bool)
    keep[0:9, 0] = True  # a range of 9, no hole: nothing wasted
    keep[[0, 1, 2, 3, 5, 6, 7, 8, 9], 1] = True  # 9 of a range of 10: 1 row computed in vain
    keep[[0, 5, 9], 2] = True  # 3 of 10: gathered, 3 rows moved at 1/0.9 - 1 each
    assert _moved_rows(keep, 0.9) == pytest.approx(0 + 1 + 3 * (1 / 0.9 - 1))
    assert _moved_rows(keep, 1.1) == 0  # never ranged: moving is priced at nothing


def test_dynamic_returns_rows_in_the_callers_order():
    model, x = _model_and_input("cifar_resnet32", (3, 16, 16), batch=8)
    keep = torch.zeros(8, model.num_blocks)
    keep[[1, 3, 5, 7], 2:] = 1  # odd rows keep every block from 2 on: grouping moves them
    with torch.no_grad():
        dynamic = model.forward_dynamic(x, keep)
        for i in range(8):
            torch.testing.assert_close(dynamic[i : i + 1], model(x[i : i + 1], keep[i : i + 1]), rtol=1e-5, atol=1e-5)
