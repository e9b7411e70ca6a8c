"""``adaframe.evaluate``: AdaFrame's adaptive lookahead on ``test`` (mAP, frames, GFLOPs per video),
the trade-off curve over μ and T_e, the baselines at K frames when given, report and figures."""

from __future__ import annotations

import json
import os

from frugalcv.errors import ConfigError
from frugalcv.workflows import kit
from frugalcv.workflows.adaframe import model_file, report
from frugalcv.workflows.adaframe.data import check_matches, evaluation_batches
from frugalcv.workflows.adaframe.evaluate import adaframe_metrics, baseline_metrics, evaluate_split
from frugalcv.workflows.adaframe.params import EvaluateParams

#: the feature settings a baselines file must share with the AdaFrame checkpoint (the same frames)
SHARED = ("max_frames", "long_videos", "fine_dim")
#: optional inputs holding baselines: every model of the file, or only the one of that name
BASELINE_INPUTS = ("baselines", "avgpool", "lstm")


def _baselines(ctx: kit.StageContext, features: dict) -> tuple[dict[str, dict], list[int]]:
    """``{model: {"net", "args", "features"}}`` from the baseline inputs, and their frame counts K."""
    found: dict[str, dict] = {}
    frames: set[int] = set()
    for name in BASELINE_INPUTS:
        if name not in ctx.inputs:
            continue
        state = model_file.read(ctx, name, model_file.BASELINES_FORMAT)
        for key in SHARED:
            if state["features"][key] != features[key]:
                raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: trained with {key}="
                                  f"{state['features'][key]!r}, the AdaFrame checkpoint with {features[key]!r}; "
                                  "train both on the same frames")
        models = model_file.load_baselines(ctx, state)
        if name != "baselines":
            if name not in models:
                raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: holds no {name} baseline (it has "
                                  f"{', '.join(models) or 'none'}); give an adaframe.baselines stage with "
                                  f"models: [{name}]")
            models = {name: models[name]}
        for model, net in models.items():
            if model in found:
                raise ConfigError(f"stages.{ctx.stage}.inputs.{name}: a second {model} baseline (the first came "
                                  f"from inputs.{found[model]['input']}); give each baseline once")
            found[model] = {"net": net, "args": state[model]["args"], "features": state["features"], "input": name}
        frames |= set(state["frames"])
    return found, sorted(frames)


def _points(rollouts, steps: list[int], p: EvaluateParams, features: dict, args: dict) -> dict[str, list[dict]]:
    """The curve: per T_e, a point per μ and the point that never stops early."""
    curve = {}
    for t in steps:
        points = [{**adaframe_metrics(rollouts, t, mu, p.patience, features, args)[0], "margin": mu}
                  for mu in p.curve_margins]
        points.append({**adaframe_metrics(rollouts, t, None, p.patience, features, args)[0], "margin": None})
        curve[f"AdaFrame-{t}"] = points
    return curve


@kit.register_stage("adaframe.evaluate", params=EvaluateParams, inputs=("checkpoint", "test"),
                    optional_inputs=BASELINE_INPUTS, outputs=("report", "metrics"))
def evaluate_stage(ctx: kit.StageContext) -> kit.StageResult:
    """mAP, top-1, frames and GFLOPs per video at the lookahead stop (`margin` μ, `patience` p, at most
    `steps` glimpses) on `test`; with `baselines` (or `avgpool` / `lstm`, each trained apart),
    AVGPOOLING and LSTM over all frames and K uniform (U) or random (R) frames; report.md with
    Table 3.1's layout and the figures."""
    p: EvaluateParams = ctx.params
    if not ctx.is_main:
        return kit.StageResult()
    state = model_file.read(ctx, "checkpoint", model_file.FORMAT)
    features, args = state["features"], state["model_args"]
    check_matches(ctx, "test", features, "AdaFrame checkpoint")
    net = model_file.load_adaframe(ctx, state)
    steps = p.steps or int(state["steps"])
    curve_steps = sorted(set(p.curve_steps or [steps]))
    baselines, trained_frames = _baselines(ctx, features)
    frames = sorted(set(p.frames or trained_frames))
    batches = evaluation_batches(ctx, "test", p.batch_size, features)
    rollouts, rows = evaluate_split(net, batches, max([steps, *curve_steps]), features, frames=frames, seed=p.seed,
                                    baselines={k: (b["net"], b["features"]) for k, b in baselines.items()})

    main, stops = adaframe_metrics(rollouts, steps, p.margin, p.patience, features, args)
    metrics = {**main, "frames_fraction": main["frames_mean"] / max(main["video_frames_mean"], 1e-9)}
    no_stop, _ = adaframe_metrics(rollouts, steps, None, p.patience, features, args)
    metrics.update({f"nostop_{k}": no_stop[k] for k in ("map", "top1", "frames_mean", "gflops_mean")})
    label = f"AdaFrame-{steps} (μ={p.margin:g}, p={p.patience})"
    table_rows, series = [], {}
    for row in sorted(rows, key=lambda r: (r.model, r.mode != "all", r.k or 0, r.mode != "u")):
        m = baseline_metrics(row, rollouts.labels, features, baselines[row.model]["args"])
        metrics.update({f"{row.key}_{k}": m[k] for k in ("map", "top1", "gflops_mean")})
        name = report.method_label(row.model, row.mode, row.k)
        table_rows.append((name, m))
        if row.mode != "all":
            series.setdefault(name.rstrip("0123456789"), []).append(m)
    for name, m in table_rows:  # each U / R line ends at the all-frames point
        if name in ("AVGPOOLING", "LSTM"):
            for key in (f"{name}-U", f"{name}-R"):
                series.setdefault(key, []).append(m)
    if "avgpool_map" in metrics:
        metrics["map_minus_avgpool"] = metrics["map"] - metrics["avgpool_map"]
    table_rows += [(f"AdaFrame-{steps} (no early stop)", no_stop), (label, main)]
    curve = _points(rollouts, curve_steps, p, features, args)
    names = features["classes"]

    title = p.title or f"AdaFrame, pipeline {ctx.pipeline}, run {ctx.run_id}"
    notes = [f"{len(rollouts.labels)} test videos of {main['video_frames_mean']:.1f} frames on average "
             f"(at most {features['max_frames']}); AdaFrame glimpses at most {steps} frames and stops at the "
             f"lookahead rule (μ = {p.margin:g}, patience p = {p.patience}); frames count every glimpse, a "
             "repeated one too",
             f"GFLOPs per video, 2 per multiply-add: fine backbone {features['fine_gflops']:.3g} per frame read, "
             f"coarse {features['coarse_gflops']:.3g} per memory frame (T_d = {args['memory_frames']}), plus "
             "the recurrent networks and heads; the dissertation counts multiply-adds (half)"]
    with kit.local_outputs(ctx) as out:
        figures = [
            report.plot_map_vs_cost(curve, series, os.path.join(out, "map_vs_gflops.png")),
            report.plot_stop_steps(stops, rollouts.labels, names, steps, os.path.join(out, "stop_steps_per_class.png"),
                                   p.figure_classes),
        ]
        table = report.results_table(table_rows)
        report.write_report(out, title=title, table=table, notes=notes, figures=figures,
                            class_table=report.class_stop_table(stops, rollouts.labels, names, p.figure_classes))
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump({"metrics": metrics, "curve": curve}, f, indent=1, sort_keys=True)
    ctx.printer(table)
    files = [ctx.path("report.md"), *(ctx.path(n) for n in report.FIGURES), ctx.path("metrics.json")]
    return kit.StageResult(metrics=metrics, outputs={"report": ctx.path("report.md"), "metrics": ctx.path("metrics.json")},
                           artifacts={"report": files})
