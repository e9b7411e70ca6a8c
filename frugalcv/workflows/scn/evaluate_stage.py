"""``scn.evaluate``: test regression error of an SCN checkpoint (and of its no-offset ablation when
given), and the linear probe on the bottom stream's h1 against the original backbone's features
(the frozen top stream, W_T), with the report and figures."""

from __future__ import annotations

import json
import os

import torch

from frugalcv.errors import ConfigError
from frugalcv.workflows import kit
from frugalcv.workflows.scn import model_file, report
from frugalcv.workflows.scn.data import image_stream, pair_stream
from frugalcv.workflows.scn.params import EvaluateParams
from frugalcv.workflows.scn.probe import image_features, labelled_features, probe_accuracy, probe_map
from frugalcv.workflows.scn.train import regression_error

#: (extractor, metric suffix, report row) of every probed representation
PROBED = (("scn", "", "SCN"), ("no_offset", "_no_offset", "SCN without offsets"),
          ("original", "_original", "Original backbone (W_T)"))


def _load(ctx, name: str):
    state = model_file.read(ctx, name, model_file.SCN_FORMAT)
    return state, kit.place(ctx, model_file.load_scn(state)).eval()


@kit.register_stage("scn.evaluate", params=EvaluateParams, inputs=("checkpoint", "train", "test"),
                    optional_inputs=("no_offset", "probe_train", "probe_test"), outputs=("report", "metrics"))
def evaluate_stage(ctx: kit.StageContext) -> kit.StageResult:
    """``test_mse`` (and ``no_offset_test_mse``, ``mse_ratio``); ``probe_accuracy`` on h1 and
    ``probe_accuracy_original`` on the original features (and ``probe_accuracy_no_offset`` on the
    no-offset network's h1), the probe fitted on ``train``'s labelled patches and scored on
    ``test``'s; with ``probe_train`` and ``probe_test`` (labelled images) the probe is on those whole
    images instead, and on multi-hot labels (kind voc) it gives ``probe_map`` and ``probe_map_original``
    (and ``probe_map_no_offset``)."""
    p: EvaluateParams = ctx.params
    if not ctx.is_main:
        return kit.StageResult()
    state, net = _load(ctx, "checkpoint")
    size = int(state["patch_size"])
    test = pair_stream(ctx, "test", p.batch_size, size, train=False)
    metrics = regression_error(net, test)
    curves = {"with offsets": state["history"]}
    rows = {"SCN": {"test_mse": metrics["test_mse"]}}
    extractors = {"scn": net.features, "original": net.original_features}
    if "no_offset" in ctx.inputs:
        other_state, other = _load(ctx, "no_offset")
        other_mse = regression_error(other, pair_stream(ctx, "test", p.batch_size, int(other_state["patch_size"]),
                                                        train=False))["test_mse"]
        metrics["no_offset_test_mse"] = other_mse
        metrics["mse_ratio"] = metrics["test_mse"] / other_mse if other_mse > 0 else float("inf")
        curves["without offsets"] = other_state["history"]
        rows["SCN without offsets"] = {"test_mse": other_mse}
        extractors["no_offset"] = other.features
    probe_rows, probe_note, probe_unit = _probe(ctx, p, size, test, extractors, metrics)
    for name, value in probe_rows.items():
        rows.setdefault(name, {})["probe"] = value
    title = p.title or f"SCN ({state['backbone']}), pipeline {ctx.pipeline}, run {ctx.run_id}"
    table = report.summary_table(list(rows.items()), probe=probe_unit)
    notes = [probe_note,
             "test MSE: mean over test pairs of ||target - h3||^2 (Eq. 5.2)"]
    with kit.local_outputs(ctx) as out:
        figures = [f for f in (report.plot_mse_curves(curves, os.path.join(out, "test_mse.png")),) if f]
        if "reconstructions" in state:
            names = list(test.loader.manifest.classes)
            fig = report.plot_reconstructions(state["reconstructions"], names, os.path.join(out, "reconstructions.png"))
            figures += [fig] if fig else []
        report.write_report(out, title=title, tables=[("Results", table)], notes=notes, figures=figures)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump({**metrics, "curves": curves}, f, indent=1, sort_keys=True)
        files = [os.path.basename(f) for f in figures]
    ctx.printer(table)
    return kit.StageResult(metrics=metrics,
                           outputs={"report": ctx.path("report.md"), "metrics": ctx.path("metrics.json")},
                           artifacts={"report": [ctx.path("report.md"), *(ctx.path(f) for f in files),
                                                 ctx.path("metrics.json")]})


def _probe(ctx, p: EvaluateParams, size: int, test, extractors, metrics: dict) -> tuple[dict, str, str]:
    """The linear probe's metrics (into ``metrics``), its table cells, its report note and its unit."""
    given = [name for name in ("probe_train", "probe_test") if name in ctx.inputs]
    if len(given) == 1:
        missing = ({"probe_train", "probe_test"} - set(given)).pop()
        raise ConfigError(f"stages.{ctx.stage}.inputs: {given[0]} without {missing}; give both (labelled images "
                          "to fit the probe on and to score it on) or neither (the pairs' labelled patches)")
    with torch.no_grad():
        if given:
            train_x, train_y = image_features(image_stream(ctx, "probe_train", p.batch_size, size, train=False),
                                              extractors)
            test_x, test_y = image_features(image_stream(ctx, "probe_test", p.batch_size, size, train=False),
                                            extractors)
            what = "images"
        else:
            train_x, train_y = labelled_features(pair_stream(ctx, "train", p.batch_size, size, train=False),
                                                 extractors)
            test_x, test_y = labelled_features(test, extractors)
            what = "labelled patches"
    multi = train_y.ndim == 2
    score, key = (probe_map, "probe_map") if multi else (probe_accuracy, "probe_accuracy")
    cells = {}
    for name, suffix, row in PROBED:
        if name in extractors:
            metrics[key + suffix] = cells[row] = score(train_x[name], train_y, test_x[name], test_y, kind=p.probe,
                                                       c=p.probe_c, seed=p.seed)
    unit = "mean AP over classes, one-vs-rest" if multi else "top-1"
    note = (f"probe: {p.probe} (C={p.probe_c}) on standardised features ({unit}), fitted on {len(train_y)} "
            f"{what}, scored on {len(test_y)}")
    return cells, note, "mAP" if multi else "top-1"
