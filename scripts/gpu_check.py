"""The GPU check (``scripts/gpu-check.sh``): what only a GPU machine can show, in under 10 minutes.

1. Every method's demo (BlockDrop's digits, DCAN's street scenes, AdaFrame's and LiteEval's digit
   videos, SCN's shapes) on CUDA, world size 1: every training
   stage's parameters and batches are on the GPU (checked inside the Trainer), and the demos finish.
2. With two or more GPUs: the pretrain stage as 2 local ranks over NCCL (DDP with device_ids).
3. Resume after SIGTERM mid-epoch gives the same sha256 of every output as an uninterrupted run.
4. Speed, as JSON lines: the pretrain stage's images/s against a bare PyTorch loop on the same GPU
   and data (``gpu_overhead_ratio``), then ``benchmarks/blockdrop_inference.py --device cuda`` and
   ``benchmarks/dcan_step.py --device cuda``.

``--allow-cpu`` runs the same steps on the CPU with tiny settings (to check this script itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "pipelines" / "blockdrop-demo.yaml"
DCAN_DEMO = REPO / "pipelines" / "dcan-demo.yaml"
#: the other methods' demos, checked the same way
OTHER_DEMOS = [REPO / "pipelines" / name for name in ("adaframe-demo.yaml", "liteeval-demo.yaml", "scn-shapes.yaml",
                                                       "scn-digit-scenes.yaml")]


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"gpu-check FAILED: {message}")
    print(f"gpu-check ok: {message}", flush=True)


def first_tensor(batch):
    """The first tensor of a batch: a tensor, or one inside tuples, lists, dicts or dataclass fields."""
    if torch.is_tensor(batch):
        return batch
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        batch = [getattr(batch, f.name) for f in dataclasses.fields(batch)]
    elif isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class DeviceProbe:
    """Wraps ``Trainer.run_step`` to record where each step's batch and parameters live."""

    def __init__(self):
        from frugalcv.workflows.engine import trainer

        self.seen: set[tuple[str, str]] = set()
        self.original = trainer.Trainer.run_step
        probe = self

        def run_step(self, batch):
            from frugalcv.workflows.engine.device import to_device

            moved = to_device(batch, self.device) if self.device is not None else batch
            tensor = first_tensor(moved)
            params = [p for group in self.update.param_groups for p in group["params"]]
            probe.seen.add((str(tensor.device.type) if tensor is not None else "none", str(params[0].device.type)))
            return probe.original(self, batch)

        trainer.Trainer.run_step = run_step


def run(cfg, **kw):
    from frugalcv.workflows.pipeline import runner

    rid = runner.run_pipeline(cfg, track=False, printer=lambda line: print(line, flush=True), **kw)
    return rid, runner.status(rid, cfg.storage.root)


def digests(status: dict) -> dict[str, str]:
    return {f"{s['stage']}.{name}": out["sha256"] for s in status["stages"] for name, out in s["outputs"].items()}


def demo_on_device(root: Path, small: bool, pipeline: Path = DEMO) -> None:
    from frugalcv.workflows.pipeline.config import load_pipeline

    probe = DeviceProbe()
    overrides = [f"storage.root={root}", "executor.kind=inline"]
    if small:
        overrides.append("smoke_steps=3")
    _, status = run(load_pipeline(pipeline, overrides))
    check(all(s["state"] == "finished" for s in status["stages"]), f"{pipeline.name} finished on this device")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    check(probe.seen == {(want, want)}, f"every training step had its batch and parameters on {want}: {probe.seen}")
    print(json.dumps({"check": "demo", **{s["stage"]: s["metrics"] for s in status["stages"][-1:]}}))


def two_rank_nccl(root: Path) -> None:
    from frugalcv.workflows.pipeline.config import load_pipeline

    cfg = load_pipeline(DEMO, [f"storage.root={root}", "executor.kind=local", "executor.slurm.tasks_per_node=2",
                               "stages.pretrain.params.epochs=1", "stages.pretrain.params.warmup_epochs=0"])
    cfg.stages = cfg.stages[:2]
    _, status = run(cfg)
    log = (Path(status["run_folder"]) / "logs" / "pretrain.log").read_text()
    check(status["stages"][1]["state"] == "finished" and "training on cuda" in log and "2 rank(s), ddp" in log,
          "a 2-rank NCCL DDP stage trained on the GPUs")


def resume_matches(root: Path, small: bool) -> None:
    """SIGTERM during pretraining (mid-epoch), resume: every output's sha256 equals the uninterrupted run's."""
    from frugalcv.workflows.pipeline import runner
    from frugalcv.workflows.pipeline.config import load_pipeline

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    overrides = ["executor.kind=inline", "stages.pretrain.params.epochs=2", "stages.pretrain.params.debug=true",
                 "stages.pretrain.checkpoint_every=3"]

    def cfg(name):
        c = load_pipeline(DEMO, [f"storage.root={root / name}", *overrides])
        c.stages = c.stages[:2]
        return c

    _, plain = run(cfg("plain"))
    interrupted = cfg("interrupted")
    ckpts = root / "interrupted" / "runs"

    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if list(ckpts.glob("*/stages/pretrain/checkpoints/step-*.pt")):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    try:
        rid, _ = run(interrupted)
        raise SystemExit("gpu-check FAILED: the SIGTERM did not interrupt the pretrain stage")
    except runner.PipelineFailed:
        rid = runner.resolve_run_id("latest", interrupted.storage.root)
    resumed = runner.status(runner.resume_run(rid, interrupted.storage.root), interrupted.storage.root)
    check(digests(resumed) == digests(plain), f"resume after SIGTERM: the same sha256 of every output {digests(plain)}")


def overhead(small: bool) -> None:
    """The pretrain stage's training images/s (streaming, the kit) against a bare loop on the same data."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "stage_streaming.py"), "--device",
                          "cuda" if torch.cuda.is_available() else "cpu", "--skip-rss",
                          *(["--images", "256", "--rounds", "1", "--debug"] if small else [])],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"gpu-check FAILED: benchmarks/stage_streaming.py: {out.stderr[-2000:]}")
    line = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"gpu_overhead_ratio": line.get("streaming_over_memory"), **line}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true", help="no GPU: run the steps on the CPU, tiny")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu-check: not run: no GPU (torch.cuda.is_available() is False)")
        return 2
    print(json.dumps({"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                      "gpus": torch.cuda.device_count(), "torch": torch.__version__}), flush=True)
    small = not torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="frugalcv-gpu-check-") as tmp:
        root = Path(tmp)
        demo_on_device(root / "demo", small)
        demo_on_device(root / "dcan", small, DCAN_DEMO)
        for pipeline in OTHER_DEMOS:
            demo_on_device(root / pipeline.stem, small, pipeline)
        if torch.cuda.device_count() >= 2:
            two_rank_nccl(root / "nccl")
        else:
            print("gpu-check: one GPU: the 2-rank NCCL stage needs two", flush=True)
        resume_matches(root / "resume", small)
        overhead(small)
    inference = [sys.executable, str(REPO / "benchmarks" / "blockdrop_inference.py"), "--device",
                 "cuda" if torch.cuda.is_available() else "cpu"]
    if small:
        inference += ["--batch", "8", "--repeats", "2", "--warmup", "1", "--malloc", "default"]
    out = subprocess.run(inference, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"gpu-check FAILED: blockdrop_inference.py: {out.stderr[-2000:]}")
    print(out.stdout.strip().splitlines()[-1], flush=True)
    step = [sys.executable, str(REPO / "benchmarks" / "dcan_step.py"), "--device",
            "cuda" if torch.cuda.is_available() else "cpu", *(["--debug", "--steps", "2", "--rounds", "1"] if small else [])]
    out = subprocess.run(step, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"gpu-check FAILED: dcan_step.py: {out.stderr[-2000:]}")
    print(out.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
