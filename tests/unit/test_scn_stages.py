"""SCN's stage pieces: params, model files, the per-sample transform, the lr milestones, the test
regression error, the reconstruction hook's state, the probe and the report."""

import numpy as np
import pytest
import torch

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.models.scn import SpatialContextNet
from frugalcv.workflows import kit
from frugalcv.workflows.scn import model_file, report
from frugalcv.workflows.scn.data import PairTransform, to_float_pairs
from frugalcv.workflows.scn.params import EvaluateParams, PretrainParams, TrainParams
from frugalcv.workflows.scn.probe import labelled_features, probe_accuracy
from frugalcv.workflows.scn.train import (
    ContextTask,
    ReconstructionHook,
    examples_by_kind,
    milestone_schedule,
    regression_error,
)


def net(**kwargs):
    torch.manual_seed(0)
    return SpatialContextNet(build_model("scn_cnn_m", debug=True, num_classes=4, dropout=0.0), **kwargs)


def batch(b=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = (torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8),
           torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8),
           torch.rand(b, 8, generator=g), torch.arange(b) % 3 + 1, torch.zeros(b, dtype=torch.long))
    return to_float_pairs(raw, g)


@pytest.mark.parametrize(("cls", "kwargs", "field"), [
    (TrainParams, {"backbone": "resnet50"}, "backbone"), (TrainParams, {"target": "edges"}, "target"),
    (TrainParams, {"lr_milestones": [50, 10]}, "lr_milestones"), (TrainParams, {"momentum": 1.0}, "momentum"),
    (TrainParams, {"patch_size": 8}, "patch_size"), (TrainParams, {"epochs": 0}, "epochs"),
    (TrainParams, {"hidden": 0}, "hidden"), (PretrainParams, {"width": 0}, "width"),
    (PretrainParams, {"dropout": 1.0}, "dropout"), (EvaluateParams, {"probe": "knn"}, "probe"),
    (EvaluateParams, {"probe_c": 0}, "probe_c"),
])
def test_bad_params_name_their_field(cls, kwargs, field):
    with pytest.raises(kit.FieldError) as e:
        cls(**kwargs)
    assert e.value.field == field


def test_defaults_are_the_dissertations_recipe():
    p = TrainParams()
    assert (p.backbone, p.patch_size, p.batch_size, p.lr, p.lr_milestones, p.weight_decay, p.epochs) == (
        "vgg19", 224, 64, 1e-3, [100], 5e-4, 200)
    assert p.use_offset and p.target == "features" and not p.train_convs
    assert p.backbone_args(1000)["pool"] == 7 and PretrainParams(backbone="cnn_m").backbone_args(10)["pool"] == 6


def test_the_lr_drops_by_gamma_after_each_milestone_epoch():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    hook = milestone_schedule(opt, [2, 3], 0.1, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        hook.scheduler.step()
    assert lrs[:10] == pytest.approx([1e-3] * 10) and lrs[10:15] == pytest.approx([1e-4] * 5)
    assert lrs[15:] == pytest.approx([1e-5] * 5)


def test_pair_transform_resizes_and_fills_unknown_classes():
    sample = {"key": "k", "a": np.zeros((20, 24, 3), np.uint8), "b": np.full((32, 32, 3), 7, np.uint8),
              "offset": np.arange(8, dtype=np.float32)}
    a, b, o, la, lb = PairTransform(32)(sample)
    assert a.shape == b.shape == (3, 32, 32) and a.dtype == torch.uint8 and int(b[0, 0, 0]) == 7
    assert o.tolist() == list(range(8)) and la == lb == -1
    with pytest.raises(ConfigError, match="no offset; SCN reads patch-pair shards"):
        PairTransform(32)({"key": "k", "a": sample["a"], "b": sample["b"]})


def test_context_task_and_regression_error_agree_on_eq_5_2():
    model = net()
    data = batch()
    out = ContextTask(model).training_step(data)
    model.eval()
    assert regression_error(model, [data])["test_mse"] == pytest.approx(float(out["mse"]), rel=1e-5)
    assert model.training is False
    model.train()
    regression_error(model, [data])
    assert model.training and not model.top.training


def test_reconstruction_hook_keeps_one_frame_per_epoch_and_restores_it():
    model = net(target="pixels", target_size=8)
    data = batch()
    examples = examples_by_kind([data], [1, 2, 3])
    assert sorted(examples) == [1, 2, 3]
    hook = ReconstructionHook(model, examples)

    class Trainer:
        epoch, step, failed = 1, 5, False

    hook.trainer = Trainer()
    hook.after_epoch()
    hook.trainer.epoch, hook.trainer.step = 2, 10
    hook.after_epoch()
    hook.after_train()  # right after an epoch's frame: nothing new
    result = hook.result()
    assert result["epochs"] == [1, 2] and result["frames"].shape == (2, 3, 3, 8, 8)
    assert result["truth"].dtype == torch.uint8 and result["kinds"] == [1, 2, 3]
    again = ReconstructionHook(model, examples)
    again.load_state_dict(hook.state_dict())
    assert torch.equal(again.result()["frames"], result["frames"])


def test_probe_features_count_every_labelled_patch_and_separate_easy_classes():
    model = net().eval()
    data = batch(8)
    rows, labels = labelled_features([data], {"scn": model.features})
    assert rows["scn"].shape[0] == 16 and sorted(set(labels.tolist())) == [0, 1, 2, 3]
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (40, 5)), rng.normal(4, 1, (40, 5))])
    y = np.repeat([0, 1], 40)
    for kind in ("linear_svm", "logistic"):
        assert probe_accuracy(x[::2], y[::2], x[1::2], y[1::2], kind=kind) == 1.0
    with pytest.raises(ConfigError, match="one class"):
        probe_accuracy(x[:10], y[:10], x, y)


def test_model_files_round_trip_and_refuse_other_files(tmp_path):
    model = net()
    state = {"format": "scn", "backbone": "cnn_m", "backbone_args": {"debug": True, "num_classes": 4},
             "scn_args": {"hidden": None, "use_offset": True, "target": "features", "target_size": 16, "offset_init": 10.0,
                          "train_convs": False}, "state": model.state_dict(), "patch_size": 32, "history": []}
    url = str(tmp_path / "model.pt")
    kit.save_state(url, state)

    class Ctx:
        stage, inputs = "evaluate", {"checkpoint": url}

        def input(self, name):
            return self.inputs[name]

    loaded = model_file.load_scn(model_file.read(Ctx(), "checkpoint", model_file.SCN_FORMAT))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))
    with pytest.raises(ConfigError, match=r"inputs.checkpoint: .*model.pt is not an scn.pretrain model file"):
        model_file.read(Ctx(), "checkpoint", model_file.BACKBONE_FORMAT)


def test_report_writes_the_table_and_figures(tmp_path):
    curves = {"with offsets": [{"epoch": e, "test_mse": 10 / e} for e in range(1, 5)],
              "without offsets": [{"epoch": e, "test_mse": 9.0} for e in range(1, 5)]}
    assert report.plot_mse_curves(curves, str(tmp_path / "mse.png"))
    recon = {"kinds": [1, 2, 3], "epochs": [1, 2, 3], "truth": torch.zeros(3, 3, 8, 8, dtype=torch.uint8),
             "frames": torch.zeros(3, 3, 3, 8, 8, dtype=torch.uint8)}
    assert report.plot_reconstructions(recon, ["circle", "square", "triangle", "black"], str(tmp_path / "r.png"))
    table = report.summary_table([("SCN", {"test_mse": 1.5, "probe": 0.75}), ("Original", {"probe": 0.5})])
    assert "| SCN | 1.5 | 75.0 |" in table and "| Original | - | 50.0 |" in table
    path = report.write_report(str(tmp_path), title="t", tables=[("Results", table)], notes=["n"],
                               figures=[str(tmp_path / "mse.png")])
    with open(path) as f:
        assert "![mse](mse.png)" in f.read()
