"""``dcan.evaluate``: target-domain mIoU of a DCAN checkpoint (alignment off), against the source-only
and two-stage checkpoints when given, with the per-class table (Table 6.1's layout) and figures."""

from __future__ import annotations

import json
import os

from frugalcv.workflows import kit
from frugalcv.workflows.dcan import model_file, report
from frugalcv.workflows.dcan.data import eval_stream, image_stream
from frugalcv.workflows.dcan.evaluate import evaluate, translations
from frugalcv.workflows.dcan.metrics import segmentation_metrics
from frugalcv.workflows.dcan.params import EvaluateParams

#: optional inputs -> (row label, metric prefix)
BASELINES = {"source_only": ("Source only", "source_only_"), "two_stage": ("Two-stage", "two_stage_")}


def _translation_figure(ctx, state: dict, out: str, count: int, size) -> str | None:
    """Source images next to their synthesised versions and the target images whose statistics they took."""
    if "generator" not in state or "source" not in ctx.inputs or count == 0:
        return None
    gen, _ = model_file.generator_net(ctx, None, state)
    gen = kit.place(ctx, gen)
    targets = next(iter(image_stream(ctx, "val", count, size)), None) if size else None
    if targets is None:  # the target's stored size, from its first batch
        targets = next(iter(eval_stream(ctx, "val", count, None)), (None,))[0]
    if targets is None:
        return None
    sources = next(iter(image_stream(ctx, "source", count, list(targets.shape[-2:]))), None)
    if sources is None:
        return None
    n = min(len(sources), len(targets))
    rows = translations(gen, sources[:n], targets[:n])
    return report.plot_translations(*rows, os.path.join(out, "translations.png"))


@kit.register_stage("dcan.evaluate", params=EvaluateParams, inputs=("checkpoint", "val"),
                    optional_inputs=("source_only", "two_stage", "source"), outputs=("report", "metrics"))
def evaluate_stage(ctx: kit.StageContext) -> kit.StageResult:
    """mIoU, per-class IoU and pixel accuracy on ``val``; ``source_only_miou`` and ``gain`` with ``source_only``."""
    p: EvaluateParams = ctx.params
    if not ctx.is_main:
        return kit.StageResult()
    state = model_file.read(ctx, "checkpoint", needs="segmentation")
    nets, labels = {}, {}
    for name, (label, _) in BASELINES.items():
        if name in ctx.inputs:
            nets[name] = model_file.load_segmentation(ctx, model_file.read(ctx, name, needs="segmentation"))
            labels[name] = label
    nets["dcan"], labels["dcan"] = model_file.load_segmentation(ctx, state), "DCAN"
    classes, names = state["classes"], state["class_names"]
    result = evaluate(nets, eval_stream(ctx, "val", p.batch_size, p.size), len(names), device=ctx.device,
                      precision=ctx.precision, keep=p.figures)
    scores = {name: segmentation_metrics(cm, names, classes) for name, cm in result.matrices.items()}
    metrics = dict(scores["dcan"])
    for name, (_, prefix) in BASELINES.items():
        if name in scores:
            metrics[f"{prefix}miou"] = scores[name]["miou"]
            metrics[f"{prefix}pixel_accuracy"] = scores[name]["pixel_accuracy"]
    if "source_only" in scores:
        metrics["gain"] = scores["dcan"]["miou"] - scores["source_only"]["miou"]
    rows = [(labels[name], scores[name]) for name in nets]
    title = p.title or f"DCAN ({state['model']}), pipeline {ctx.pipeline}, run {ctx.run_id}"
    with kit.local_outputs(ctx) as out:
        figures = []
        if p.figures:
            figures.append(report.plot_predictions(result.images, result.ground_truth,
                                                   {labels[n]: result.predictions[n] for n in nets},
                                                   os.path.join(out, "predictions.png")))
            if (fig := _translation_figure(ctx, state, out, p.figures, p.size)) is not None:
                figures.append(fig)
        tables = [("Target-domain mIoU", report.summary_table(rows)),
                  ("Per-class IoU (%)", report.iou_table(rows, names, classes))]
        report.write_report(out, title=title, tables=tables, figures=figures)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump({labels[n]: scores[n] for n in nets}, f, indent=1, sort_keys=True)
        files = [os.path.basename(f) for f in figures]
    ctx.printer(report.summary_table(rows))
    ctx.printer(report.iou_table(rows, names, classes))
    return kit.StageResult(metrics=metrics,
                           outputs={"report": ctx.path("report.md"), "metrics": ctx.path("metrics.json")},
                           artifacts={"report": [ctx.path("report.md"), *(ctx.path(f) for f in files),
                                                 ctx.path("metrics.json")]})
