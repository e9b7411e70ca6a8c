"""``liteeval.evaluate``: LiteEval's hard gate on ``test`` against the always-fine network, UNIFORM-K and
SEQ-K, and its online predictions; metrics, ``report.md`` and figures."""

from __future__ import annotations

import json
import os

from frugalcv.errors import ConfigError
from frugalcv.sharding import storage
from frugalcv.workflows import kit
from frugalcv.workflows.liteeval import model_file, report
from frugalcv.workflows.liteeval.evaluate import (
    EvalPad,
    Variant,
    always_fine,
    informative_metrics,
    online_accuracy,
    read_positions,
    run_variants,
    seq_k,
    summarise,
    uniform_k,
    variant_costs,
)
from frugalcv.workflows.liteeval.params import EvaluateParams
from frugalcv.workflows.video.data import split_info

#: further LiteEval model files (e.g. trained at other γ): more points of the mAP-vs-GFLOPs figure
EXTRAS = ("extra_1", "extra_2", "extra_3", "extra_4")


def _longs(batch: dict, generator) -> dict:
    return {**batch, "length": batch["length"].long(), "label": batch["label"].long()}


def eval_batches(ctx: kit.StageContext, split: str, batch_size: int, frames: int) -> kit.EvalStream:
    """``split`` in order, every video once, padded to ``frames``, frame marks kept for the analysis."""
    return kit.stream(ctx, ctx.input(split), batch_size, EvalPad(frames, coarse=True), batch_transform=_longs,
                      train=False)


def _gflops(info: dict) -> tuple[float, float]:
    return float(info.get("coarse_gflops") or 0.0), float(info.get("fine_gflops") or 0.0)


def _variant(loaded: dict, **kwargs) -> Variant:
    return Variant(model_file.network(loaded), loaded["features"], **kwargs)


def quick_metrics(ctx: kit.StageContext, loaded: dict, split: str, batch_size: int) -> dict[str, float]:
    """``map``, ``top1``, ``fine_fraction``, ``gflops`` of a model file on ``split`` (its own gate, or every
    fine frame for an always-fine network)."""
    info = split_info(ctx, split)
    model_file.check_split(loaded, info, f"stages.{ctx.stage}.inputs.{split}")
    variant = _variant(loaded, decide=always_fine if loaded["gate"] == "always_fine" else None)
    seen = run_variants({"net": variant}, eval_batches(ctx, split, batch_size, loaded["features"]["max_frames"]),
                        ctx.device)
    m = summarise(variant, seen["labels"], variant_costs(variant.net), _gflops(info))
    return {k: m[k] for k in ("map", "top1", "fine_fraction", "gflops")}


def _check(params: EvaluateParams, inputs) -> None:
    if params.baseline_model == "always_fine" and "always_fine" not in inputs:
        raise kit.FieldError("baseline_model", "always_fine needs the input always_fine (a liteeval.train "
                             "checkpoint with gate: always_fine); or use learned / auto")


def _label(loaded: dict) -> str:
    return f"LiteEval (γ={loaded['gamma']:g})"


@kit.register_stage("liteeval.evaluate", params=EvaluateParams, inputs=("checkpoint", "test"),
                    optional_inputs=("always_fine", *EXTRAS), outputs=("report", "metrics"), check=_check)
def evaluate_stage(ctx: kit.StageContext) -> kit.StageResult:
    """mAP, top-1, fine fraction and GFLOPs per video of LiteEval's hard gate on `test`; the always-fine
    network (`always_fine_*`), UNIFORM-K and SEQ-K at every budget K (`uniform_k<K>_map`, `seq_k<K>_map`; at
    LiteEval's own budget: `uniform_k_map`, `seq_k_map`), the online top-1 after the K-th fine read
    (`online_top1_k<K>` vs `seq_online_top1_k<K>`), `extra_<i>_*` for further LiteEval model files;
    report.md with the tables and figures."""
    p: EvaluateParams = ctx.params
    if not ctx.is_main:
        return kit.StageResult()
    info = split_info(ctx, "test")
    where = f"stages.{ctx.stage}.inputs"
    main = model_file.read(ctx, "checkpoint")
    if main["gate"] != "learned":
        raise ConfigError(f"{where}.checkpoint: {storage.redact(ctx.input('checkpoint'))} is an always-fine network; give LiteEval's "
                          "(gate: learned) here and the always-fine one as the input always_fine")
    loaded = {"checkpoint": main}
    for name in ("always_fine", *EXTRAS):
        if name in ctx.inputs:
            loaded[name] = model_file.read(ctx, name)
    for name, state in loaded.items():
        model_file.check_split(state, info, f"{where}.{name}")
    frames = int(main["features"]["max_frames"])
    budgets = sorted(set(p.budgets or range(1, frames + 1)))
    if budgets[-1] > frames:
        raise ConfigError(f"stages.{ctx.stage}.params.budgets: {budgets[-1]} fine reads but the videos have at most "
                          f"{frames} frames (the checkpoint's max_frames)")
    baseline = "always_fine" if p.baseline_model in ("auto", "always_fine") and "always_fine" in loaded else "checkpoint"
    backbones, batches = _gflops(info), eval_batches(ctx, "test", p.batch_size, frames)

    # pass 1: LiteEval (its own hard gate), the further LiteEval networks, always fine
    first = {"liteeval": _variant(main, online=tuple(budgets), keep_decisions=True),
             "always_fine": _variant(loaded[baseline], decide=always_fine)}
    first.update({name: _variant(loaded[name]) for name in EXTRAS if name in loaded})
    seen = run_variants(first, batches, ctx.device)
    summary = {name: summarise(v, seen["labels"], variant_costs(v.net), backbones) for name, v in first.items()}
    lite = summary["liteeval"]
    own_k = min(frames, max(1, round(lite["fine_reads"])))

    # pass 2: UNIFORM-K and SEQ-K (forced reads, prediction at the end) at every budget and at LiteEval's own
    base = model_file.network(loaded[baseline])
    second = {}
    for k in sorted(set(budgets) | {own_k}):
        second[f"uniform_k{k}"] = Variant(base, loaded[baseline]["features"], decide=uniform_k(k))
        second[f"seq_k{k}"] = Variant(base, loaded[baseline]["features"], decide=seq_k(k),
                                      online=(k,) if k in budgets else ())
    run_variants(second, batches, ctx.device)
    fixed = {name: summarise(v, seen["labels"], variant_costs(v.net), backbones) for name, v in second.items()}
    uniform = {k: fixed[f"uniform_k{k}"] for k in budgets}
    seq = {k: fixed[f"seq_k{k}"] for k in budgets}
    online = online_accuracy(first["liteeval"])
    seq_online = {k: online_accuracy(second[f"seq_k{k}"])[k] for k in budgets}

    metrics = {**{k: lite[k] for k in ("map", "top1", "fine_fraction", "fine_reads")},
               "gflops_mean": lite["gflops"], "lstm_gflops_mean": lite["lstm_gflops"], "baseline_k": float(own_k),
               **{f"always_fine_{k}": summary["always_fine"][k] for k in ("map", "top1", "fine_fraction")},
               "always_fine_gflops_mean": summary["always_fine"]["gflops"],
               "uniform_k_map": fixed[f"uniform_k{own_k}"]["map"], "seq_k_map": fixed[f"seq_k{own_k}"]["map"],
               "uniform_k_gflops": fixed[f"uniform_k{own_k}"]["gflops"],
               "seq_k_gflops": fixed[f"seq_k{own_k}"]["gflops"],
               **informative_metrics(first["liteeval"], seen)}
    for k in budgets:
        metrics.update({f"uniform_k{k}_map": uniform[k]["map"], f"uniform_k{k}_gflops": uniform[k]["gflops"],
                        f"seq_k{k}_map": seq[k]["map"], f"seq_k{k}_gflops": seq[k]["gflops"],
                        f"online_top1_k{k}": online[k], f"seq_online_top1_k{k}": seq_online[k]})
    for name in EXTRAS:
        if name in summary:
            metrics.update({f"{name}_{k}": summary[name][k] for k in ("map", "top1", "fine_fraction", "gflops")})

    fine_label = ("Always fine" if baseline == "always_fine"
                  else "Always fine (LiteEval's network, every fine frame forced)")
    rows = [(fine_label, summary["always_fine"]), (f"UNIFORM-{own_k}", fixed[f"uniform_k{own_k}"]),
            (f"SEQ-{own_k}", fixed[f"seq_k{own_k}"]), (_label(main), lite)]
    rows += [(_label(loaded[name]), summary[name]) for name in EXTRAS if name in summary]
    points = [(f"γ={loaded[n]['gamma']:g}", summary["liteeval" if n == "checkpoint" else n])
              for n in ("checkpoint", *EXTRAS) if n in loaded]
    base_name = "the always-fine network" if baseline == "always_fine" else "LiteEval's network"
    notes = [
        f"{len(seen['labels'])} test videos of up to {frames} frames; the gate is the argmax of b_t (no noise).",
        f"UNIFORM-K and SEQ-K run {base_name} with forced reads (K uniformly spaced / the first K frames, "
        "the other frames coarse only), predicting at the video's end; at K = "
        f"{own_k}, LiteEval's mean fine reads rounded, they read as many fine frames as LiteEval.",
        "Online: the prediction is forced right after the K-th fine read (a video that reads fewer predicts at "
        f"its end); SEQ-K's K-th read is its K-th frame, with {base_name}.",
        f"GFLOPs per video: coarse backbone {backbones[0]:.4g} × frames + fine backbone {backbones[1]:.4g} × fine "
        "reads (per frame, from the split's manifest) + the LSTMs, gate and classifier (2 FLOPs per "
        "multiply-add).",
    ]
    if "informative_precision" in metrics:
        notes.append(f"{100 * metrics['informative_precision']:.1f}% of LiteEval's fine reads land on frames that "
                     f"show the class ({100 * metrics['informative_rate']:.1f}% of all frames do; it reads "
                     f"{100 * metrics['informative_recall']:.1f}% of them).")
    title = p.title or f"LiteEval, pipeline {ctx.pipeline}, run {ctx.run_id}"
    with kit.local_outputs(ctx) as out:
        figures = [
            report.plot_map_vs_gflops(points, summary["always_fine"], uniform, seq,
                                      os.path.join(out, "map_vs_gflops.png")),
            report.plot_online(online, seq_online, os.path.join(out, "online_accuracy.png")),
            report.plot_fine_reads(read_positions(first["liteeval"], seen), os.path.join(out, "fine_reads.png")),
        ]
        tables = [("Results (Table 4.1 layout)", report.results_table(rows)),
                  ("Online recognition: top-1 after K fine reads", report.online_table(online, seq_online)),
                  ("UNIFORM-K and SEQ-K at every budget", report.budgets_table(uniform, seq))]
        report.write_report(out, title=title, tables=tables, notes=notes, figures=figures)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=1, sort_keys=True)
    ctx.printer(report.results_table(rows))
    ctx.printer(report.online_table(online, seq_online))
    files = [ctx.path(name) for name in ("report.md", *report.FIGURES, "metrics.json")]
    return kit.StageResult(metrics=metrics,
                           outputs={"report": ctx.path("report.md"), "metrics": ctx.path("metrics.json")},
                           artifacts={"report": files})
