"""AdaFrame's stage pieces: params, the uniform cut, the training steps, the one-pass evaluation
and its operating points, mAP and GFLOPs by hand, model files, the report."""

import math

import numpy as np
import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.models.adaframe import AdaFrameNet, AvgPoolClassifier, LSTMClassifier, adaframe_flops
from frugalcv.workflows import kit
from frugalcv.workflows.adaframe import model_file, report
from frugalcv.workflows.adaframe.costs import adaframe_gflops, avgpool_gflops, lstm_gflops
from frugalcv.workflows.adaframe.data import feature_stats, prepare
from frugalcv.workflows.adaframe.evaluate import Rollouts, adaframe_metrics, baseline_metrics, evaluate_split
from frugalcv.workflows.adaframe.metrics import mean_average_precision, top1
from frugalcv.workflows.adaframe.params import BaselinesParams, EvaluateParams, TrainParams
from frugalcv.workflows.adaframe.train import AdaFrameTask, BaselinesTask, frame_counts, schedule_hooks
from frugalcv.workflows.pipeline.schema import build
from frugalcv.workflows.video.data import PadFrames

DIMS = {"feature_dim": 10, "memory_dim": 6, "num_classes": 3, "hidden": 8, "memory_frames": 4}
FEATURES = {"classes": ["a", "b", "c"], "max_frames": 6, "long_videos": "uniform", "normalize": "none",
            "fine_dim": 10, "coarse_dim": 6, "fine_gflops": 2.0, "coarse_gflops": 0.5}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch(b=4, t=6, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths or [t] * b, dtype=torch.long)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()[..., None]
    return {"features": torch.randn(b, t, DIMS["feature_dim"], generator=g) * mask,
            "coarse": torch.randn(b, t, DIMS["memory_dim"], generator=g) * mask,
            "length": lengths, "label": torch.arange(b) % DIMS["num_classes"]}


def net(seed=0) -> AdaFrameNet:
    torch.manual_seed(seed)
    return AdaFrameNet(**DIMS)


# ------------------------------------------------------------------------------------ params


def test_defaults_are_the_dissertation_recipe():
    p = TrainParams()
    assert (p.optimizer, p.momentum, p.weight_decay, p.lam, p.epochs, p.batch_size) == ("sgd", 0.9, 1e-4, 1.0, 100, 128)
    assert (p.hidden, p.memory_frames, p.steps, p.gamma, p.sigma) == (2048, 16, 10, 0.9, 0.1)
    assert BaselinesParams().models == ["avgpool", "lstm"]


@pytest.mark.parametrize(("cls", "data", "key"), [
    (TrainParams, {"steps": 0}, "steps"), (TrainParams, {"gamma": 1.5}, "gamma"),
    (TrainParams, {"sigma": 0}, "sigma"), (TrainParams, {"margin": -1}, "margin"),
    (TrainParams, {"optimizer": "rmsprop"}, "optimizer"), (TrainParams, {"max_frames": 0}, "max_frames"),
    (BaselinesParams, {"models": ["avgpool", "gru"]}, "models"), (BaselinesParams, {"frames": []}, "frames"),
    (EvaluateParams, {"curve_margins": [-0.1]}, "curve_margins"), (EvaluateParams, {"patience": -1}, "patience"),
])
def test_bad_params_name_the_key(cls, data, key):
    with pytest.raises(ConfigError, match=rf"params\.{key}"):
        build(cls, data, "params")


# ------------------------------------------------------------------------------------ data


def test_long_videos_are_cut_uniformly_or_to_their_first_frames():
    sample = {"features": np.arange(10, dtype=np.float32).reshape(10, 1), "coarse": np.ones((10, 2), np.float32),
              "label": 1}
    uniform = PadFrames(4, coarse=True, uniform=True)(sample)
    assert uniform["features"].flatten().tolist() == [1, 3, 6, 8]  # the centres of 4 equal segments
    assert uniform["length"] == 4 and uniform["coarse"].shape == (4, 2)
    assert PadFrames(4, coarse=False)(sample)["features"].flatten().tolist() == [0, 1, 2, 3]
    short = PadFrames(12, coarse=False, uniform=True)(sample)  # shorter ones are padded as before
    assert short["length"] == 10 and short["features"][10:].abs().sum() == 0


def test_l2_normalises_each_frame_and_keeps_the_padding_zero():
    b = batch(lengths=[6, 3, 2, 1])
    fine, coarse = prepare(b, {**FEATURES, "normalize": "l2"})
    assert torch.allclose(fine[0].norm(dim=-1), torch.ones(6))
    assert fine[1, 3:].abs().sum() == 0 and torch.allclose(coarse[1, :3].norm(dim=-1), torch.ones(3))
    same, _ = prepare(b, FEATURES)
    assert torch.equal(same, b["features"])


def test_standardize_uses_the_statistics_of_the_valid_frames_only():
    batches = [batch(seed=0, lengths=[6, 3, 2, 1]), batch(seed=1, lengths=[4, 4, 6, 5])]
    stats = feature_stats(batches)
    valid = torch.cat([b["features"][i, :n] for b in batches for i, n in enumerate(b["length"].tolist())])
    torch.testing.assert_close(stats["fine_mean"], valid.mean(0))
    torch.testing.assert_close(stats["fine_std"], valid.std(0, unbiased=False), rtol=1e-4, atol=1e-5)
    assert stats["coarse_mean"].shape == (6,)
    fine, coarse = prepare(batches[0], {**FEATURES, "normalize": "standardize", "stats": stats})
    torch.testing.assert_close(fine[0, 0], (batches[0]["features"][0, 0] - valid.mean(0)) / stats["fine_std"])
    assert fine[1, 3:].abs().sum() == 0 and coarse[3, 1:].abs().sum() == 0


# ------------------------------------------------------------------------------------ training


def test_the_adaframe_step_trains_every_head():
    model = net()
    p = TrainParams(hidden=8, memory_frames=4, steps=3, cls_all_steps=True)
    out = AdaFrameTask(model, p, FEATURES).training_step(batch())
    assert {"loss", "cls", "util", "sel", "reward", "top1"} <= set(out)
    out["loss"].backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_the_lstm_baseline_trains_on_k_random_frames_and_avgpool_on_all():
    torch.manual_seed(0)
    models = {"avgpool": AvgPoolClassifier(10, 3), "lstm": LSTMClassifier(10, 3, hidden=5)}
    task = BaselinesTask(models, [2, 4, 9], FEATURES)
    assert task.counts == [2, 4, 6] == frame_counts([2, 4, 9], 6)  # K beyond the video: all frames
    seen = []
    lstm = models["lstm"].forward
    models["lstm"].forward = lambda x, n: seen.append((x.shape[1], n.tolist())) or lstm(x, n)
    import random

    random.seed(1)
    for _ in range(6):
        out = task.training_step(batch(lengths=[6, 5, 6, 4]))
    assert {k for k, _ in seen} <= {2, 4, 6} and len({k for k, _ in seen}) > 1
    assert all(n == [k] * 4 for k, n in seen if k < 6)
    out["loss"].backward()
    assert out["loss"].item() == pytest.approx(out["avgpool_ce"].item() + out["lstm_ce"].item(), rel=1e-6)
    assert all(q.grad is not None for m in models.values() for q in m.parameters())


def test_the_cosine_schedule_ends_at_zero():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    (hook,) = schedule_hooks(opt, TrainParams(lr_schedule="cosine", epochs=2), steps_per_epoch=3)
    for _ in range(6):
        opt.step()
        hook.scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert schedule_hooks(opt, TrainParams(), 3) == []


# ------------------------------------------------------------------------------------ evaluation


def test_one_pass_keeps_every_step_and_truncation_is_the_shorter_rollout():
    model = net()
    batches = [batch(seed=0, lengths=[6, 2, 6, 6]), batch(seed=1)]
    r, rows = evaluate_split(model, batches, 5, FEATURES)
    assert r.logits.shape == (8, 5, 3) and r.values.shape == r.mask.shape == r.locations.shape == (8, 5)
    assert r.mask[1].tolist() == [True, True, False, False, False] and rows == []
    short, _ = evaluate_split(model, batches, 3, FEATURES)
    np.testing.assert_allclose(r.logits[:, :3], short.logits, atol=1e-6)  # a rollout is causal
    probs, stop = r.lookahead(3, None, 0)
    assert stop.tolist() == [2, 1, 2, 2, 2, 2, 2, 2]  # no early stop: the last step taken
    np.testing.assert_allclose(probs, torch.from_numpy(short.logits[np.arange(8), stop]).softmax(-1).numpy(),
                               atol=1e-6)


def test_the_lookahead_stops_after_patience_counted_drops():
    values = np.array([[0.5, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    logits = np.zeros((2, 4, 2), dtype=np.float32)
    logits[:, :, 1] = np.arange(4)  # the later the stop, the more confident
    r = Rollouts(logits, values, np.ones((2, 4), bool), np.zeros((2, 4), np.int64), np.array([1, 0]), np.array([4, 4]))
    _, stop = r.lookahead(4, 0.15, 0)
    assert stop.tolist() == [1, 3]  # video 0: 0.5 - 0.3 > 0.15 at step 2; video 1 never drops
    _, stop = r.lookahead(4, 0.15, 1)
    assert stop.tolist() == [2, 3]
    m, _ = adaframe_metrics(r, 4, 0.15, 1, FEATURES, DIMS)
    assert m["frames_mean"] == pytest.approx(3.5) and m["unique_frames_mean"] == 1.0
    assert m["gflops_mean"] == pytest.approx(float(adaframe_gflops(np.array([3.5]), FEATURES, DIMS)[0]))


def test_baseline_rows_at_every_k_uniform_and_random():
    torch.manual_seed(0)
    nets = {"avgpool": (AvgPoolClassifier(10, 3), FEATURES), "lstm": (LSTMClassifier(10, 3, hidden=5), FEATURES)}
    r, rows = evaluate_split(net(), [batch(lengths=[6, 3, 6, 6])], 2, FEATURES, baselines=nets, frames=[2, 4, 6])
    keys = sorted(row.key for row in rows)
    assert keys == ["avgpool", "avgpool_r2", "avgpool_r4", "avgpool_u2", "avgpool_u4",
                    "lstm", "lstm_r2", "lstm_r4", "lstm_u2", "lstm_u4"]  # K = 6 is all frames
    all_frames = next(row for row in rows if row.key == "avgpool")
    assert all_frames.frames.tolist() == [6, 3, 6, 6] and all_frames.scores.shape == (4, 3)
    assert np.allclose(all_frames.scores.sum(1), 1.0, atol=1e-5)
    m = baseline_metrics(next(row for row in rows if row.key == "lstm_u2"), r.labels, FEATURES, {"hidden": 5, **DIMS})
    assert set(m) == {"map", "top1", "frames_mean", "gflops_mean"} and m["frames_mean"] == 2


def test_mean_average_precision_by_hand():
    labels = np.array([0, 0, 1, 2])
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    # class 0: ranking 0 (+), 2 (-), 1 (+) -> AP = (1/1 + 2/3) / 2; class 1: 1 (-), 2 (+) -> 1/2; class 2: 1
    assert mean_average_precision(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 0.5 + 1) / 3)
    assert top1(scores, labels) == pytest.approx(0.5)
    missing = mean_average_precision(scores[:2], labels[:2])  # classes 1 and 2 have no video: left out
    assert missing == pytest.approx(1.0)


def test_gflops_by_hand():
    step = adaframe_flops(8, 10, 6, 4, 3, flops_per_mac=2) / 1e9
    assert adaframe_gflops(np.array([2.0]), FEATURES, DIMS)[0] == pytest.approx(2 * (2.0 + step) + 4 * 0.5)
    args = {"feature_dim": 10, "num_classes": 3, "hidden": 5}
    assert avgpool_gflops(np.array([4.0]), FEATURES, args)[0] == pytest.approx(4 * 2.0 + 2 * 10 * 3 / 1e9)
    lstm = 4 * (2.0 + 2 * 4 * 5 * (10 + 5) / 1e9) + 2 * 5 * 3 / 1e9
    assert lstm_gflops(np.array([4.0]), FEATURES, args)[0] == pytest.approx(lstm)


# ------------------------------------------------------------------------------------ files, report


class Ctx:
    stage = "evaluate"

    def __init__(self, inputs, out=None):
        self.inputs, self.output_dir = inputs, out

    def input(self, name):
        return self.inputs[name]

    def path(self, *parts):
        import os

        return os.path.join(self.output_dir, *parts)

    device, channels_last = "cpu", False


def test_model_files_round_trip_and_a_wrong_file_names_the_input(tmp_path):
    ctx = Ctx({}, str(tmp_path))
    model = net()
    url = model_file.save_adaframe(ctx, model, DIMS, 3, FEATURES)
    state = model_file.read(Ctx({"checkpoint": url}), "checkpoint", model_file.FORMAT)
    assert torch.load(url, weights_only=True)["steps"] == 3 and state["features"] == FEATURES
    loaded = model_file.load_adaframe(ctx, state)
    b = batch()
    assert torch.equal(loaded(b["features"], b["length"], b["coarse"], 2, sample=False).logits,
                       model(b["features"], b["length"], b["coarse"], 2, sample=False).logits)
    with pytest.raises(ConfigError, match=r"inputs.baselines: .*model.pt is not an adaframe.baselines model file"):
        model_file.read(Ctx({"baselines": url}), "baselines", model_file.BASELINES_FORMAT)
    kit.save_state(str(tmp_path / "b.pt"), {"format": model_file.BASELINES_FORMAT})
    nets = {"avgpool": (AvgPoolClassifier(10, 3), {"feature_dim": 10, "num_classes": 3})}
    burl = model_file.save_baselines(Ctx({}, str(tmp_path / "b")), nets, [2, 4], FEATURES)
    loaded = model_file.load_baselines(ctx, model_file.read(Ctx({"b": burl}), "b", model_file.BASELINES_FORMAT))
    assert set(loaded) == {"avgpool"}


def test_report_table_and_figures(tmp_path):
    m = {"map": 0.8, "top1": 0.7, "frames_mean": 3.25, "frames_std": 1.5, "gflops_mean": 0.0123}
    table = report.results_table([("AVGPOOLING", {**m, "frames_std": 0.0}), ("AdaFrame-10", m)])
    assert table.splitlines()[0] == "| Method | Frames | mAP (%) | Top-1 (%) | GFLOPs |"
    assert "| AdaFrame-10 | 3.25 ± 1.50 | 80.0 | 70.0 | 0.0123 |" in table
    assert report.method_label("lstm", "u", 8) == "LSTM-U8" and report.method_label("avgpool", "all", None) == "AVGPOOLING"
    stops, labels = np.array([0, 1, 1, 3, 2]), np.array([0, 0, 1, 2, 2])
    assert report.per_class_means(stops, labels, 4)[:3].tolist() == [1.5, 2.0, 3.5]
    assert math.isnan(report.per_class_means(stops, labels, 4)[3])
    assert report.class_stop_table(stops, labels, ["a", "b", "c", "d"], 1).splitlines()[2:] == [
        "| a | 1.50 | 2 |", "| c | 3.50 | 2 |"]  # the earliest and the latest
    curve = {"AdaFrame-4": [m, {**m, "map": 0.85, "frames_mean": 4, "gflops_mean": 0.02}]}
    series = {"LSTM-U": [{**m, "frames_mean": k, "gflops_mean": k / 100} for k in (2, 4)]}
    for path in (report.plot_map_vs_cost(curve, series, str(tmp_path / "a.png")),
                 report.plot_stop_steps(stops, labels, ["a", "b", "c", "d"], 4, str(tmp_path / "b.png"))):
        assert (tmp_path / path).stat().st_size > 0
