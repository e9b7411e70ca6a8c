"""Runner overhead per stage: a pipeline of no-op stages, fresh and fully cached, per executor.

    python benchmarks/pipeline_overhead.py [--stages 10] [--executor inline local] [--track]

What is measured is everything but the stage's own work: fingerprinting, records, reference
resolution, sha256 of outputs, the executor's start-up (a child process for ``local``) and,
with ``--track``, MLflow calls to a local sqlite store. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from frugalcv.workflows.pipeline import runner
from frugalcv.workflows.pipeline.config import pipeline_from_dict
from frugalcv.workflows.pipeline.stages import StageResult, register_stage


@register_stage("bench.noop", replace=True)
def noop(ctx):
    path = ctx.path("out.txt")
    with open(path, "w") as f:
        f.write(f"{ctx.stage} {ctx.params.get('n')}\n")
    return StageResult(metrics={"n": float(ctx.params.get("n", 0))}, outputs={"out": path})


def pipeline(root: str, n: int, kind: str):
    stages = [{"name": "s0", "uses": "bench.noop", "params": {"n": 0}}]
    stages += [{"name": f"s{i}", "uses": "bench.noop", "params": {"n": i},
                "inputs": {"prev": f"${{stages.s{i - 1}.outputs.out}}"}} for i in range(1, n)]
    return pipeline_from_dict({"name": "bench", "storage": {"root": root}, "executor": {"kind": kind},
                               "stages": stages})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", type=int, default=10)
    p.add_argument("--executor", nargs="+", default=["inline", "local"])
    p.add_argument("--track", action="store_true", help="also log to MLflow (sqlite under the temp root)")
    args = p.parse_args()
    result = {"benchmark": "pipeline_overhead", "stages": args.stages, "track": args.track}
    for kind in args.executor:
        with tempfile.TemporaryDirectory() as root:
            cfg = pipeline(root, args.stages, kind)
            t0 = time.perf_counter()
            runner.run_pipeline(cfg, track=args.track, printer=lambda s: None)
            fresh = time.perf_counter() - t0
            t0 = time.perf_counter()
            runner.run_pipeline(cfg, track=args.track, printer=lambda s: None)
            cached = time.perf_counter() - t0
        result[f"{kind}_fresh_s_per_stage"] = round(fresh / args.stages, 4)
        result[f"{kind}_cached_s_per_stage"] = round(cached / args.stages, 4)
        print(f"{kind}: fresh {fresh:.2f}s, all cached {cached:.2f}s for {args.stages} stages")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
