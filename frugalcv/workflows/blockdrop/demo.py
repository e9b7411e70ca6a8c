"""BlockDrop end to end on scikit-learn digits, on CPU, in a few minutes.

    python -m frugalcv.workflows.blockdrop.demo [--out DIR] [--gamma 5] [--seed 0]

Shards digits (once), pretrains ``cifar_resnet32``, learns the policy with the curriculum
(ResNet frozen), finetunes both jointly, evaluates before and after finetuning (with the
FirstK/RandomK/DistributeK heuristics), writes ``report.md``, figures, checkpoints and
``metrics.json`` into DIR, and prints the table and the metrics JSON.

The paper's recipe adapted to 1437 training images (CIFAR-10 has 50,000): batch sizes are
scaled down so every epoch still has several updates (curriculum 2048 -> 256, finetuning
256 -> 128), and the learning rates are raised accordingly (Adam 1e-4 -> 1e-3 for the policy;
see ``digits_recipe``) because the whole run has a few hundred updates instead of ~10^5.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import torch

from frugalcv.errors import ConfigError
from frugalcv.models import build_model
from frugalcv.workflows.blockdrop.curriculum import CurriculumConfig, learn_policy
from frugalcv.workflows.blockdrop.data import TensorBatches, channel_stats, load_split, normalize
from frugalcv.workflows.blockdrop.evaluate import evaluate_policy
from frugalcv.workflows.blockdrop.finetune import FinetuneConfig, finetune
from frugalcv.workflows.blockdrop.pretrain import PretrainConfig, classification_accuracy, pretrain
from frugalcv.workflows.blockdrop.report import baselines_table, results_table, write_report


@dataclass(kw_only=True)
class DigitsDemoConfig:
    model: str = "cifar_resnet32"
    policy_model: str = "policy_resnet8_cifar"
    gamma: float = 5.0
    seed: int = 0
    eval_batch_size: int = 360
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self):
        if self.curriculum.gamma != self.gamma or self.finetune.gamma != self.gamma:
            raise ConfigError(
                f"gamma={self.gamma} but curriculum.gamma={self.curriculum.gamma} and finetune.gamma="
                f"{self.finetune.gamma}; build the config with digits_recipe(gamma=...) to set all three"
            )


def digits_recipe(gamma: float = 5.0, seed: int = 0, quick: bool = False) -> DigitsDemoConfig:
    """The tuned digits recipe; ``quick`` is the shortened run of the integration test."""
    scale = 0.5 if quick else 1.0
    return DigitsDemoConfig(
        gamma=gamma,
        seed=seed,
        pretrain=PretrainConfig(epochs=max(2, round(6 * scale)), batch_size=64, lr=0.1, warmup_epochs=0.5),
        curriculum=CurriculumConfig(epochs=max(6, round(20 * scale)), epochs_per_stage=1, batch_size=256,
                                    lr=1e-3, gamma=gamma, entropy_weight=0.1, alpha=0.8),
        finetune=FinetuneConfig(epochs=max(2, round(5 * scale)), batch_size=128, lr=1e-4, gamma=gamma),
    )


def shard_digits(root: str) -> tuple[str, str]:
    """Write the digits shards under ``root`` unless complete ones exist; returns (train, test) URLs."""
    from frugalcv.sharding import write_shards
    from frugalcv.sharding.storage import exists, join

    urls = {split: join(root, split) for split in ("train", "test")}
    missing = [s for s, url in urls.items() if not exists(join(url, "manifest.json"))]
    if missing:
        write_shards("digits", "sklearn", root, split=missing, progress=False)
    return urls["train"], urls["test"]


def run(config: DigitsDemoConfig, out: str, *, pretrained: str | None = None, printer=print) -> dict:
    """The whole experiment; returns the metrics dict also written to ``out/metrics.json``."""
    os.makedirs(out, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 1)
        printer(f"[{name}] {timings[name]:.1f}s")
        return time.perf_counter()

    torch.manual_seed(config.seed)
    t = time.perf_counter()
    train_url, test_url = shard_digits(os.path.join(out, "shards"))
    x_train, y_train = load_split(train_url)
    x_test, y_test = load_split(test_url)
    mean, std = channel_stats(x_train)
    x_train, x_test = normalize(x_train, mean, std), normalize(x_test, mean, std)
    test_data = TensorBatches(x_test, y_test, config.eval_batch_size)

    def train_data(cfg, translate=0):
        return TensorBatches(x_train, y_train, cfg.batch_size, shuffle=True, seed=config.seed,
                             translate=translate, drop_last=len(x_train) > cfg.batch_size)

    t = lap("data", t)

    resnet = build_model(config.model)
    if pretrained:
        resnet.load_state_dict(torch.load(pretrained, weights_only=True))
    else:
        pretrain(resnet, train_data(config.pretrain, config.pretrain.translate), config.pretrain, printer=printer)
        torch.save(resnet.state_dict(), os.path.join(out, "resnet_pretrained.pt"))
    pretrained_accuracy = classification_accuracy(resnet, test_data(0))
    printer(f"pretrained {config.model}: test accuracy {100 * pretrained_accuracy:.2f}%")
    t = lap("pretrain", t)

    policy_net = build_model(config.policy_model, num_blocks=resnet.num_blocks)
    learn_policy(resnet, policy_net, train_data(config.curriculum), config.curriculum, printer=printer)
    torch.save(policy_net.state_dict(), os.path.join(out, "policy_curriculum.pt"))
    t = lap("curriculum", t)
    before = evaluate_policy(resnet, policy_net, test_data, seed=config.seed)
    t = lap("evaluate_before", t)

    finetune(resnet, policy_net, train_data(config.finetune, config.finetune.translate), config.finetune,
             printer=printer)
    torch.save(resnet.state_dict(), os.path.join(out, "resnet_finetuned.pt"))
    torch.save(policy_net.state_dict(), os.path.join(out, "policy_finetuned.pt"))
    t = lap("finetune", t)
    after = evaluate_policy(resnet, policy_net, test_data, seed=config.seed)
    t = lap("evaluate_after", t)

    after_m, before_m = after.metrics, before.metrics
    notes = [
        f"Pretrained {config.model} test accuracy: {100 * pretrained_accuracy:.2f}% "
        f"({len(x_train)} train / {len(x_test)} test digits).",
        f"After finetuning: {100 * after_m['accuracy']:.2f}% with {after_m['blocks_mean']:.2f} of "
        f"{int(after_m['num_blocks'])} blocks ({100 * after_m['blocks_mean'] / after_m['num_blocks']:.0f}%), "
        f"{100 * (after_m['accuracy'] - pretrained_accuracy):+.2f} points vs the pretrained full ResNet.",
        f"Seed {config.seed}; recipe: {json.dumps(asdict(config))}",
    ]
    write_report(out, title=f"BlockDrop on digits ({config.model}, γ={config.gamma:g})", before=before,
                 after=after, gamma=config.gamma, notes=notes, class_names=[str(d) for d in range(10)])
    timings["report"] = round(time.perf_counter() - t, 1)
    timings["total"] = round(time.perf_counter() - t_start, 1)
    metrics = {
        "pretrained_accuracy": pretrained_accuracy,
        "before_finetune": before_m,
        "after_finetune": after_m,
        "gamma": config.gamma,
        "seed": config.seed,
        "seconds": timings,
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    printer(results_table([("BlockDrop, before finetuning", before_m), ("BlockDrop, after finetuning", after_m)]))
    printer(baselines_table(before_m, after_m))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="frugalcv-runs/blockdrop-digits", help="output folder")
    parser.add_argument("--gamma", type=float, default=5.0, help="penalty for a wrong prediction (Eq. 2.3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="shortened run (about half the epochs)")
    parser.add_argument("--pretrained", help="load this ResNet state dict instead of pretraining")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    metrics = run(digits_recipe(args.gamma, args.seed, args.quick), args.out, pretrained=args.pretrained)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
