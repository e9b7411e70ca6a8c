"""LiteEval's stage pieces: the temperature schedule and its hook, the training step, feature
preparation, model files, the evaluation's variants, mAP and GFLOPs by hand, params, the report."""

import math

import numpy as np
import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.models.liteeval import LiteEvalNet, liteeval_flops
from frugalcv.workflows import kit
from frugalcv.workflows.liteeval import model_file, report
from frugalcv.workflows.liteeval.evaluate import (
    EvalPad,
    Variant,
    always_fine,
    informative_metrics,
    mean_average_precision,
    online_accuracy,
    read_positions,
    run_variants,
    seq_k,
    summarise,
    uniform_k,
)
from frugalcv.workflows.liteeval.evaluate_stage import _check
from frugalcv.workflows.liteeval.params import EvaluateParams, TrainParams
from frugalcv.workflows.liteeval.train import LiteEvalTask, TemperatureHook, prepare_features, temperature

DIMS = {"coarse_dim": 6, "fine_dim": 10, "num_classes": 3, "coarse_hidden": 4, "fine_hidden": 8}
FEATURES = {"max_frames": 5, "normalize": "l2", "feature_norm": 1.0}


def batch(b=4, t=5, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths or [t] * b, dtype=torch.long)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()[..., None]
    return {"coarse": torch.randn(b, t, DIMS["coarse_dim"], generator=g) * mask,
            "features": torch.randn(b, t, DIMS["fine_dim"], generator=g) * mask,
            "length": lengths, "label": torch.arange(b) % DIMS["num_classes"]}


def net(seed=0):
    torch.manual_seed(seed)
    return LiteEvalNet(**DIMS)


# ------------------------------------------------------------------------------------ training


def test_temperature_anneals_exponentially_from_start_to_end():
    taus = [temperature(s, 11, 5.0, 0.5) for s in range(13)]
    assert taus[0] == 5.0 and taus[10] == pytest.approx(0.5) and taus[12] == pytest.approx(0.5)
    ratios = [taus[i + 1] / taus[i] for i in range(10)]
    assert ratios == pytest.approx([0.1 ** 0.1] * 10)  # a constant factor per step
    assert temperature(0, 1, 5.0, 0.5) == 0.5


def test_temperature_hook_sets_tau_each_step_and_restores_it():
    task = LiteEvalTask(net(), TrainParams(tau_start=4.0, tau_end=1.0))

    class Trainer:
        step, last_output = 3, {}

    hook = TemperatureHook(task, total_steps=5)
    hook.trainer = Trainer()
    hook.before_step()
    assert task.tau == pytest.approx(4.0 * 0.25 ** 0.75)
    hook.after_step()
    assert hook.trainer.last_output["tau"] == task.tau
    state = hook.state_dict()
    other = LiteEvalTask(net(), TrainParams(tau_start=4.0, tau_end=1.0))
    restored = TemperatureHook(other, total_steps=99)
    restored.load_state_dict(state)
    assert other.tau == task.tau and restored.total_steps == 5


def test_prepare_features_normalises_each_frame_and_keeps_padding_zero():
    b = batch(lengths=[5, 3, 2, 1])
    coarse, fine = prepare_features(b, "l2", 3.0)
    norms = fine.norm(dim=-1)
    assert torch.allclose(norms[0], torch.full((5,), 3.0)) and torch.all(norms[1, 3:] == 0)
    assert torch.allclose(coarse.norm(dim=-1)[2, :2], torch.full((2,), 3.0))
    same, _ = prepare_features(b, "none", 3.0)
    assert torch.equal(same, b["coarse"])


def test_learned_step_trains_the_gate_and_always_fine_reads_everything():
    learned = net()
    out = LiteEvalTask(learned, TrainParams(gamma=0.5, noise_scale=1.0)).training_step(batch())
    assert torch.isfinite(out["loss"]) and 0 <= float(out["fine_fraction"]) <= 1
    out["loss"].backward()
    assert learned.gate.weight.grad is not None and learned.gate.weight.grad.abs().sum() > 0

    fine = net()
    out = LiteEvalTask(fine, TrainParams(gate="always_fine")).training_step(batch(lengths=[5, 4, 2, 1]))
    assert float(out["fine_fraction"]) == 1.0 and float(out["gate"]) == 0.0
    assert torch.equal(out["loss"], out["ce"])
    out["loss"].backward()
    assert fine.gate.weight.grad is None  # the gate's output is never used
    assert fine.fine_lstm.weight_ih.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ model files


def test_model_file_round_trips_weights_only_and_refuses_other_files(tmp_path):
    n = net()
    info = {"classes": ["a", "b", "c"], "coarse_dim": 6, "fine_dim": 10, "coarse_gflops": 0.1, "fine_gflops": 2.0}
    url = str(tmp_path / "model.pt")
    kit.save_state(url, model_file.state(n, gate="learned", gamma=0.3, lam=2.0, features=FEATURES, info=info))
    loaded = torch.load(url, weights_only=True)
    assert loaded["format"] == "liteeval" and loaded["dims"] == DIMS and loaded["backbones"]["fine"]["gflops"] == 2.0
    again = model_file.network(loaded)
    b = batch()
    with torch.no_grad():
        a = n.eval()(b["coarse"], b["features"], b["length"], mode="hard").final_logits
        assert torch.equal(a, again(b["coarse"], b["features"], b["length"], mode="hard").final_logits)
    model_file.check_split(loaded, info, "x")
    with pytest.raises(ConfigError, match="reads 10-d fine features, the split has 12-d"):
        model_file.check_split(loaded, {**info, "fine_dim": 12}, "x")

    class Ctx:
        stage, inputs = "evaluate", {"checkpoint": str(tmp_path / "other.pt")}

        def input(self, name):
            return self.inputs[name]

    kit.save_state(Ctx.inputs["checkpoint"], {"resnet": {}})
    with pytest.raises(ConfigError, match=r"stages.evaluate.inputs.checkpoint: .*other.pt is not a LiteEval model"):
        model_file.read(Ctx(), "checkpoint")


# ------------------------------------------------------------------------------------ evaluation


def test_mean_average_precision_by_hand():
    labels = np.array([0, 0, 1, 1])
    perfect = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert mean_average_precision(perfect, labels) == pytest.approx(1.0)
    # class 0 ranks 0, 2, 1, 3 -> hits at ranks 1 and 3: AP = (1 + 2/3) / 2; class 1 ranks 3, 1, 2, 0:
    # hits at ranks 1 and 3 (videos 3, 2): AP = (1 + 2/3) / 2
    mixed = np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4], [0.2, 0.8]])
    assert mean_average_precision(mixed, labels) == pytest.approx(5 / 6)
    # a class no video has is left out of the mean
    assert mean_average_precision(np.c_[perfect, np.zeros(4)], labels) == pytest.approx(1.0)


def test_summary_counts_backbones_and_lstm_flops_per_video():
    n = net().eval()
    b = batch(lengths=[5, 3, 2, 1])
    v = Variant(n, FEATURES, decide=always_fine)
    seen = run_variants({"fine": v}, [b], "cpu")
    m = summarise(v, seen["labels"], liteeval_flops(**DIMS), (0.1, 2.0))
    costs = liteeval_flops(**DIMS)
    per_video = [0.1 * t + 2.0 * t + 2 * (t * costs["every_step"] + t * costs["fine_read"] + costs["classifier"]) / 1e9
                 for t in (5, 3, 2, 1)]
    assert m["gflops"] == pytest.approx(np.mean(per_video))
    assert m["fine_fraction"] == 1.0 and m["fine_reads"] == pytest.approx(11 / 4)


def test_seq_k_online_prediction_is_the_always_fine_state_after_k_frames():
    n = net().eval()
    b = batch(b=6, lengths=[5, 5, 4, 3, 2, 5])
    everything = Variant(n, FEATURES, decide=always_fine, online=(1, 2, 3, 4, 5))
    seqs = {k: Variant(n, FEATURES, decide=seq_k(k), online=(k,)) for k in (1, 2, 3)}
    run_variants({"all": everything, **{f"seq{k}": v for k, v in seqs.items()}}, [b], "cpu")
    for k, v in seqs.items():
        assert online_accuracy(v)[k] == online_accuracy(everything)[k]
        assert torch.equal(torch.cat(v.reads), torch.clamp(b["length"], max=k).float())
    uniform = Variant(n, FEATURES, decide=uniform_k(2))
    run_variants({"u": uniform}, [b], "cpu")
    assert torch.equal(torch.cat(uniform.reads), torch.tensor([2.0, 2, 2, 2, 2, 2]))


def test_hard_gate_variant_records_reads_positions_and_informative_share():
    n = net().eval()
    b = batch(lengths=[5, 4, 5, 2])
    b["informative"] = torch.zeros(4, 5, dtype=torch.uint8)
    b["informative"][:, 0] = 1
    v = Variant(n, FEATURES, online=(1,), keep_decisions=True)
    seen = run_variants({"lite": v}, [b], "cpu")
    decisions = torch.cat(v.decisions)
    assert torch.all(decisions[~seen["mask"]] == 0)
    positions = read_positions(v, seen)
    assert positions["read_rate"].shape == (5,) and positions["informative_rate"][0] == 1.0
    info = informative_metrics(v, seen)
    assert info["informative_rate"] == pytest.approx(4 / 16)
    reads = decisions.sum()
    if reads:
        assert info["informative_precision"] == pytest.approx(float(decisions[:, 0].sum() / reads))


def test_eval_pad_keeps_the_marks_padded():
    sample = {"features": np.ones((3, 10), np.float32), "coarse": np.ones((3, 6), np.float32), "label": 2,
              "informative": np.array([1, 0, 1], np.uint8)}
    out = EvalPad(5, coarse=True)(sample)
    assert out["informative"].tolist() == [1, 0, 1, 0, 0] and out["length"] == 3
    assert out["features"].shape == (5, 10) and float(out["features"][3:].abs().sum()) == 0


# ------------------------------------------------------------------------------------ params, report


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"gamma": 1.5}, "gamma"), ({"fine_hidden": 8, "coarse_hidden": 16}, "fine_hidden"),
    ({"tau_start": 0.5, "tau_end": 5.0}, "tau_end"), ({"lam": -1}, "lam"), ({"max_frames": 0}, "max_frames"),
    ({"feature_norm": 0}, "feature_norm"), ({"lr": 0}, "lr"),
])
def test_bad_train_params_name_their_field(kwargs, field):
    with pytest.raises(kit.FieldError) as e:
        TrainParams(**kwargs)
    assert e.value.field == field


def test_the_padded_length_and_the_coarse_features_are_checked():
    from frugalcv.workflows.liteeval.stages import _check_coarse, max_frames

    class Ctx:
        stage, inputs = "train", {"train": "/data/fine-only"}

        def input(self, name):
            return self.inputs[name]

    assert max_frames(Ctx(), {"frames": 16}, None) == 16 and max_frames(Ctx(), {"frames": None}, 8) == 8
    with pytest.raises(ConfigError, match="stages.train.params.max_frames: the split's videos differ in length"):
        max_frames(Ctx(), {"frames": None}, None)
    with pytest.raises(ConfigError, match="inputs.train: /data/fine-only has no coarse and fine features"):
        _check_coarse(Ctx(), {"fine_dim": 10, "coarse_dim": None}, "train")


def test_evaluate_params_and_inputs_are_checked():
    with pytest.raises(kit.FieldError) as e:
        EvaluateParams(budgets=[0, 2])
    assert e.value.field == "budgets"
    with pytest.raises(kit.FieldError, match="needs the input always_fine"):
        _check(EvaluateParams(baseline_model="always_fine"), ["checkpoint", "test"])
    _check(EvaluateParams(baseline_model="always_fine"), ["checkpoint", "test", "always_fine"])
    _check(EvaluateParams(), ["checkpoint", "test"])


def test_report_tables_and_figures(tmp_path):
    m = {"map": 0.8, "top1": 0.75, "fine_reads": 4.0, "fine_fraction": 0.25, "gflops": 1.5}
    table = report.results_table([("LiteEval (γ=0.3)", m)])
    assert "| LiteEval (γ=0.3) | 80.0 | 75.0 | 4.00 | 25.0 | 1.5 |" in table
    online = report.online_table({1: 0.5, 2: 0.6}, {1: 0.4, 2: 0.6})
    assert "| 1 | 50.0 | 40.0 | +10.0 |" in online and "| 2 | 60.0 | 60.0 | +0.0 |" in online
    curve = {k: {**m, "gflops": float(k)} for k in (1, 2)}
    assert "| 2 | 80.0 | 2 | 80.0 | 2 |" in report.budgets_table(curve, curve)
    figures = [report.plot_map_vs_gflops([("γ=0.3", m)], m, curve, curve, str(tmp_path / "a.png")),
               report.plot_online({1: 0.5, 2: 0.6}, {1: 0.4, 2: 0.6}, str(tmp_path / "b.png")),
               report.plot_fine_reads({"read_rate": np.array([0.5, 0.1])}, str(tmp_path / "c.png"))]
    text = report.write_report(str(tmp_path), title="T", tables=[("R", table)], notes=["n"], figures=figures)
    assert text.startswith("# T") and "![a.png](a.png)" in text and "- n" in text
    assert all((tmp_path / f).stat().st_size > 0 for f in ("a.png", "b.png", "c.png", "report.md"))
    assert math.isfinite(m["map"])
